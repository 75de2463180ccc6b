"""The Long-CLIP tokenizer gives CLIP's BPE ids in a 248-token context, truncating to EOT,
and the level prompts are the literal strings the released checkpoint was used with."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import SHARED
from mtpg_aiaa.models.mtpg.prompts import LEVEL_SCORES, LEVELS, expected_score, level_prompts
from mtpg_aiaa.backbone.tokenizer import EOT_TOKEN_ID, SOT_TOKEN_ID, get_tokenizer

DESCRIPTIONS = SHARED / "data" / "paintings" / "descriptions.json"
CONTEXT = 248


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def _descriptions() -> dict[str, str]:
    if not DESCRIPTIONS.is_file():
        pytest.skip(f"shared painting descriptions not found at {DESCRIPTIONS}")
    return json.loads(DESCRIPTIONS.read_text())


def test_special_ids():
    assert (SOT_TOKEN_ID, EOT_TOKEN_ID) == (49406, 49407)


def test_known_ids_and_zero_padding(tok):
    ids = tok("a photo of a cat")
    assert ids.shape == (1, CONTEXT)
    assert ids.dtype == torch.long
    expected = torch.zeros(1, CONTEXT, dtype=torch.long)
    expected[0, :7] = torch.tensor([49406, 320, 1125, 539, 320, 2368, 49407])
    assert torch.equal(ids, expected)


def test_batch_of_strings_is_row_per_text(tok):
    ids = tok(["a photo of a cat", "a cat"])
    assert ids.shape == (2, CONTEXT)
    assert ids[1, :4].tolist() == [49406, 320, 2368, 49407]
    assert torch.equal(ids[0], tok("a photo of a cat")[0])


@pytest.mark.parametrize(
    "messy, clean",
    [
        ("Cats &amp; Dogs", "cats & dogs"),  # html entity
        ("  a   photo\n\tof a   cat  ", "a photo of a cat"),  # whitespace
        ("A PHOTO OF A CAT", "a photo of a cat"),  # case
        ("cafÃ©", "café"),  # mojibake fixed by ftfy
    ],
)
def test_cleaning(tok, messy, clean):
    assert torch.equal(tok(messy), tok(clean))


def test_cleaning_cases_are_not_vacuous(tok):
    # Sanity: the cleaning test is not vacuous (different words give different ids).
    assert not torch.equal(tok("cats & dogs"), tok("cats and dogs"))


def _check_truncated(tok, text: str):
    ids = tok(text)[0]
    untruncated = [SOT_TOKEN_ID] + tok._bpe.encode(text) + [EOT_TOKEN_ID]
    assert len(untruncated) > CONTEXT
    assert int((ids != 0).sum()) == CONTEXT
    assert ids[: CONTEXT - 1].tolist() == untruncated[: CONTEXT - 1]
    assert int(ids[-1]) == EOT_TOKEN_ID
    assert int(ids.argmax()) == CONTEXT - 1
    assert tok.token_count(text) == len(untruncated)
    assert tok.is_truncated(text)


def test_long_text_is_truncated_with_eot_last(tok):
    # Each of these 5 words is one BPE token, so 60 repeats are 300 tokens.
    text = " ".join(["the painting shows a river"] * 60)
    assert tok.token_count(text) == 302
    _check_truncated(tok, text)


def test_real_long_description_is_truncated(tok):
    text = " ".join(_descriptions().values())
    _check_truncated(tok, text)


@pytest.mark.parametrize("words, truncated", [(245, False), (246, False), (247, True)])
def test_token_count_boundary(tok, words, truncated):
    text = " ".join(["cat"] * words)  # "cat" is one token
    assert tok.token_count(text) == words + 2
    assert tok.is_truncated(text) is truncated
    ids = tok(text)[0]
    n = min(words + 2, CONTEXT)
    assert int((ids != 0).sum()) == n
    assert int(ids[n - 1]) == EOT_TOKEN_ID
    assert ids[1 : n - 1].eq(2368).all()


def test_token_count_short(tok):
    assert tok.token_count("a photo of a cat") == 7
    assert tok.token_count("") == 2
    assert not tok.is_truncated("a photo of a cat")


def test_real_descriptions_end_with_eot_at_token_count(tok):
    descriptions = _descriptions()
    assert descriptions
    for name, text in descriptions.items():
        count = tok.token_count(text)
        assert 2 < count <= CONTEXT, name
        ids = tok(text)[0]
        assert int(ids[0]) == SOT_TOKEN_ID
        assert int(ids[count - 1]) == EOT_TOKEN_ID, name
        assert int(ids.argmax()) == count - 1
        assert ids[:count].ne(0).all()
        assert ids[count:].eq(0).all()
        assert ids[1 : count - 1].lt(SOT_TOKEN_ID).all()


def test_official_prompts_are_literal_tuple_strings():
    assert level_prompts("official") == [
        "An image with ('bad',) aesthetics.",
        "An image with ('poor',) aesthetics.",
        "An image with ('fair',) aesthetics.",
        "An image with ('good',) aesthetics.",
        "An image with ('perfect',) aesthetics.",
    ]
    assert level_prompts() == level_prompts("official")


def test_clean_prompts():
    assert level_prompts("clean") == [
        "An image with bad aesthetics.",
        "An image with poor aesthetics.",
        "An image with fair aesthetics.",
        "An image with good aesthetics.",
        "An image with perfect aesthetics.",
    ]
    assert LEVELS == ("bad", "poor", "fair", "good", "perfect")


def test_unknown_prompt_set_raises():
    with pytest.raises(ValueError, match="unknown prompt set"):
        level_prompts("fancy")


def test_official_and_clean_prompts_tokenize_differently(tok):
    official, clean = tok(level_prompts("official")), tok(level_prompts("clean"))
    assert official.shape == clean.shape == (5, CONTEXT)
    for row in range(5):
        assert not torch.equal(official[row], clean[row])
    # The tuple punctuation adds tokens: ( ' ' , )
    assert (official != 0).sum(dim=1).gt((clean != 0).sum(dim=1)).all()


def test_expected_score_weights():
    assert LEVEL_SCORES == (0.1, 0.3, 0.5, 0.7, 0.9)
    probs = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [0.2] * 5, [0.5, 0, 0, 0, 0.5]])
    assert torch.allclose(expected_score(probs), torch.tensor([0.1, 0.9, 0.5, 0.5]))
