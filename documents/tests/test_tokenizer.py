"""The tokenizer chunk sizes are counted with (the packaged model's WordPiece)."""

from __future__ import annotations

from documents.tokenizer import get_tokenizer


def test_tokenizer_counts_every_token_without_truncation_or_padding():
    tokenizer = get_tokenizer()
    long_text = "word " * 1000

    assert len(tokenizer.encode(long_text).ids) == 1002  # [CLS] + 1000 + [SEP]: the file's 128 cap is off
    assert tokenizer.encode("hello world").ids == [101, 7592, 2088, 102]  # no padding
