from search.query_parser import ParsedQuery, query_parse


def test_plain_question_is_all_optional_words():
    parsed = query_parse("What lowers the risk of heart attacks?")
    assert parsed.words == ("What", "lowers", "the", "risk", "of", "heart", "attacks?")
    assert parsed.phrases == () and parsed.excluded == ()


def test_quoted_text_is_a_required_phrase():
    parsed = query_parse('"heart attack" risk')
    assert parsed.phrases == ("heart attack",)
    assert parsed.words == ("risk",)


def test_minus_before_a_word_or_phrase_excludes_it():
    parsed = query_parse('grapes -raisins -"red wine"')
    assert parsed.words == ("grapes",)
    assert parsed.excluded == ("raisins", "red wine")


def test_hyphen_inside_a_word_is_part_of_the_word():
    parsed = query_parse("covid-19 non-small cell")
    assert parsed.words == ("covid-19", "non-small", "cell")
    assert parsed.excluded == ()


def test_lone_minus_is_an_ordinary_token():
    assert query_parse("a - b").excluded == ()


def test_unmatched_quote_is_ignored():
    parsed = query_parse('a 5" screen')
    assert parsed.words == ("a", "5", "screen")
    assert parsed.phrases == ()


def test_typographic_quotes_make_phrases():
    assert query_parse("\u201cheart attack\u201d").phrases == ("heart attack",)


def test_quotes_split_words_they_touch():
    parsed = query_parse('foo"bar baz"qux')
    assert parsed.words == ("foo", "qux")
    assert parsed.phrases == ("bar baz",)


def test_phrase_whitespace_is_normalised_and_empty_phrases_dropped():
    parsed = query_parse('"  heart \n attack " "" -""')
    assert parsed.phrases == ("heart attack",)
    assert parsed.excluded == ()


def test_ranking_text_holds_words_and_phrase_words():
    parsed = query_parse('statins "heart attack" -smoking')
    assert parsed.ranking_text == "statins heart attack"


def test_query_with_only_exclusions_or_blanks_is_empty():
    assert query_parse("-smoking").is_empty
    assert query_parse("   ").is_empty
    assert query_parse("") == ParsedQuery()
    assert not query_parse('"x"').is_empty


def test_tsquery_operators_are_just_characters():
    parsed = query_parse("a & b | !c (d:* <-> e)")
    assert parsed.words == ("a", "&", "b", "|", "!c", "(d:*", "<->", "e)")
