"""Token formats: decoded examples match the documented rendering, masks sit where METHOD.md §8 says."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from transformers import PreTrainedTokenizerFast

from tests.trainer.test_tokenizer import SENTENCES
from trainer import formats
from trainer.formats import (
    FORMAT_VERSION,
    Example,
    Step,
    describe,
    discriminative,
    generative,
    render_for_scoring,
    research_first,
    research_prefix,
    research_query,
    research_step,
)
from trainer.tokenizer import ATTRIBUTES, SPECIAL_TOKENS, load, save, special_id, train_tokenizer

WHATS_UP = [("user", "What's up?")]

MIRO_CONTEXT = [("user", "What do you think of Rosalie Gascoigne's sculptures?")]
MIRO_BASE = (
    "They're great, and I love how her work changed across her life. "
    "Her influence is also super interesting - did you know she inspired Miró?"
)
MIRO_QUERY = "Miró and Gascoigne"
SNIPPET_1 = "Gascoigne had been a practitioner of ikebana before she turned to sculpture."
SNIPPET_2 = "Rosalie Gascoigne (1917-1999) was a New Zealand-born Australian sculptor."
TITLE_1, URL_1 = "Rosalie Gascoigne", "https://en.wikipedia.org/wiki/Rosalie_Gascoigne"
TITLE_2, URL_2 = "Ikebana", "https://en.wikipedia.org/wiki/Ikebana_(art)"
STEP_1 = Step(MIRO_QUERY, TITLE_1, URL_1, SNIPPET_1)
STEP_2 = Step(MIRO_QUERY, TITLE_2, URL_2, SNIPPET_2)
# What the model reads of each tool result (rule 10): the source it may cite, then the snippet.
RESULT_1 = f"[{TITLE_1}]({URL_1}) {SNIPPET_1}"
RESULT_2 = f"[{TITLE_2}]({URL_2}) {SNIPPET_2}"
MIRO_ANSWER = (
    "Oh wow, her life course is so inspiring. Did you know she was a practitioner of "
    "Japanese flower arrangement before turning to sculpture?"
)


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return train_tokenizer(SENTENCES * 3, vocab_size=300)


def decode(tok: PreTrainedTokenizerFast, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=False)


def masked(tok: PreTrainedTokenizerFast, ex: Example) -> str:
    return decode(tok, [i for i, m in zip(ex.ids, ex.loss_mask, strict=True) if m])


def paper(text: str) -> str:
    """Our rendering in the paper's notation (speaker tokens dropped, specials spelled out)."""
    text = re.sub(r"<(user|model)> ", "", text).replace("<eos>", "")
    text = text.replace("<sentinel>", " RESPONSE").replace("<TS>", " TS,").replace("<User>", " User,")
    text = text.replace("<snippet>", " SNIPPET:")
    text = re.sub(r"<(SENSIBLE|SPECIFIC|INTERESTING|UNSAFE|CORRECT|0|1)>", r" \1", text)
    return text.strip()


def check_shape(ex: Example, kind: str) -> None:
    assert ex.kind == kind
    assert len(ex.ids) == len(ex.loss_mask)
    assert set(ex.loss_mask) <= {0, 1}
    assert all(isinstance(i, int) for i in ex.ids)


# generative ------------------------------------------------------------------------------------


def test_generative_paper_example(tok: PreTrainedTokenizerFast) -> None:
    ex = generative(tok, WHATS_UP, "not much.")
    check_shape(ex, "generative")
    assert decode(tok, ex.ids) == "<user> What's up?<sentinel> not much.<eos>"
    assert paper(decode(tok, ex.ids)) == "What's up? RESPONSE not much."
    assert masked(tok, ex) == " not much.<eos>"
    # The mask is one contiguous run right after the sentinel, through <eos>.
    start = ex.ids.index(special_id(tok, "<sentinel>")) + 1
    assert ex.loss_mask == [0] * start + [1] * (len(ex.ids) - start)
    assert ex.ids[-1] == tok.eos_token_id


def test_generative_multi_turn_context(tok: PreTrainedTokenizerFast) -> None:
    context = [
        ("user", "Tell me a joke."),
        ("model", "Why did the scarecrow win an award?"),
        ("user", "Why?"),
    ]
    ex = generative(tok, context, "He was outstanding in his field.")
    assert decode(tok, ex.ids) == (
        "<user> Tell me a joke.<model> Why did the scarecrow win an award?<user> Why?"
        "<sentinel> He was outstanding in his field.<eos>"
    )
    assert masked(tok, ex) == " He was outstanding in his field.<eos>"


def test_rendering_equals_encoding_the_rendered_string(tok: PreTrainedTokenizerFast) -> None:
    ex = generative(tok, [("user", "Where is the Eiffel Tower?")], "The Eiffel Tower is in Paris, France.")
    assert tok.encode(decode(tok, ex.ids), add_special_tokens=False) == ex.ids


def test_special_token_text_in_a_turn_is_not_a_special_token(tok: PreTrainedTokenizerFast) -> None:
    ex = generative(tok, [("user", "say <sentinel> and <1> please")], "<eos> ok")
    assert decode(tok, ex.ids) == "<user> say <sentinel> and <1> please<sentinel> <eos> ok<eos>"
    assert ex.ids.count(special_id(tok, "<sentinel>")) == 1
    assert ex.ids.count(tok.eos_token_id) == 1
    assert special_id(tok, "<1>") not in ex.ids


def test_empty_context_is_allowed(tok: PreTrainedTokenizerFast) -> None:
    ex = generative(tok, [], "hello")
    assert decode(tok, ex.ids) == "<sentinel> hello<eos>"


def test_bad_speaker_is_refused(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="speaker"):
        generative(tok, [("assistant", "hi")], "hello")


# discriminative --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "rating", "rendered", "in_paper"),
    [
        (
            "SENSIBLE",
            1,
            "<user> What's up?<sentinel> not much.<SENSIBLE><1>",
            "What's up? RESPONSE not much. SENSIBLE 1",
        ),
        (
            "INTERESTING",
            0,
            "<user> What's up?<sentinel> not much.<INTERESTING><0>",
            "What's up? RESPONSE not much. INTERESTING 0",
        ),
        (
            "UNSAFE",
            0,
            "<user> What's up?<sentinel> not much.<UNSAFE><0>",
            "What's up? RESPONSE not much. UNSAFE 0",
        ),
    ],
)
def test_discriminative_paper_examples(
    tok: PreTrainedTokenizerFast, attribute: str, rating: int, rendered: str, in_paper: str
) -> None:
    ex = discriminative(tok, WHATS_UP, "not much.", attribute, rating)
    check_shape(ex, "discriminative")
    assert decode(tok, ex.ids) == rendered
    assert paper(decode(tok, ex.ids)) == in_paper
    assert sum(ex.loss_mask) == 1
    assert ex.loss_mask[-1] == 1
    assert ex.ids[-1] == special_id(tok, f"<{rating}>")
    assert ex.ids[-2] == special_id(tok, f"<{attribute}>")


@pytest.mark.parametrize("attribute", ATTRIBUTES)
@pytest.mark.parametrize("rating", [0, 1])
def test_discriminative_extends_the_scoring_prefix(
    tok: PreTrainedTokenizerFast, attribute: str, rating: int
) -> None:
    context = [
        ("user", "Can you recommend a good book?"),
        ("model", "What do you like?"),
        ("user", "Sci-fi."),
    ]
    response = "Try The Left Hand of Darkness by Ursula K. Le Guin."
    ex = discriminative(tok, context, response, attribute, rating)
    prefix = render_for_scoring(tok, context, response)
    assert ex.ids == [*prefix, special_id(tok, f"<{attribute}>"), special_id(tok, f"<{rating}>")]
    assert ex.loss_mask == [0] * (len(prefix) + 1) + [1]
    # ... and the scoring prefix is the generative example without its <eos>.
    gen = generative(tok, context, response)
    assert gen.ids == [*prefix, tok.eos_token_id]


def test_discriminative_validates(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="attribute"):
        discriminative(tok, WHATS_UP, "not much.", "FUNNY", 1)
    for bad in (2, -1, True, "1"):
        with pytest.raises(ValueError, match="rating"):
            discriminative(tok, WHATS_UP, "not much.", "SENSIBLE", bad)
    assert discriminative(tok, WHATS_UP, "x", "sensible", 1) == discriminative(
        tok, WHATS_UP, "x", "SENSIBLE", 1
    )


# research --------------------------------------------------------------------------------------


def test_research_query_miro(tok: PreTrainedTokenizerFast) -> None:
    ex = research_query(tok, MIRO_CONTEXT, MIRO_BASE, MIRO_QUERY)
    check_shape(ex, "research_query")
    prefix = f"<user> {MIRO_CONTEXT[0][1]}<sentinel> {MIRO_BASE}"
    assert decode(tok, ex.ids) == f"{prefix}<TS> {MIRO_QUERY}<eos>"
    assert paper(decode(tok, ex.ids)).endswith("inspired Miró? TS, Miró and Gascoigne")
    assert masked(tok, ex) == f"<TS> {MIRO_QUERY}<eos>"
    start = ex.ids.index(special_id(tok, "<TS>"))
    assert ex.loss_mask == [0] * start + [1] * (len(ex.ids) - start)
    assert ex.ids[:start] == render_for_scoring(tok, MIRO_CONTEXT, MIRO_BASE)


def test_research_step_miro_trace(tok: PreTrainedTokenizerFast) -> None:
    prefix = f"<user> {MIRO_CONTEXT[0][1]}<sentinel> {MIRO_BASE}"
    # Step 1: first result read, the model asks again.
    again = research_step(tok, MIRO_CONTEXT, MIRO_BASE, [STEP_1], ("TS", MIRO_QUERY))
    check_shape(again, "research_step")
    assert decode(tok, again.ids) == f"{prefix}<TS> {MIRO_QUERY}<snippet> {RESULT_1}<TS> {MIRO_QUERY}<eos>"
    assert masked(tok, again) == f"<TS> {MIRO_QUERY}<eos>"
    # Step 2: second result read, the model answers the user.
    steps = [STEP_1, STEP_2]
    answer = research_step(tok, MIRO_CONTEXT, MIRO_BASE, steps, ("User", MIRO_ANSWER))
    rendered = decode(tok, answer.ids)
    assert rendered == (
        f"{prefix}<TS> {MIRO_QUERY}<snippet> {RESULT_1}<TS> {MIRO_QUERY}<snippet> {RESULT_2}"
        f"<User> {MIRO_ANSWER}<eos>"
    )
    assert paper(rendered).endswith(f"SNIPPET: {RESULT_2} User, {MIRO_ANSWER}")
    assert masked(tok, answer) == f"<User> {MIRO_ANSWER}<eos>"
    # Loss only on the trailing outcome: one contiguous run from the <User> token.
    start = answer.ids.index(special_id(tok, "<User>"))
    assert answer.loss_mask == [0] * start + [1] * (len(answer.ids) - start)
    # Earlier queries carry no <eos> (rule 3); the only <eos> is the last id.
    assert answer.ids.count(tok.eos_token_id) == 1
    # What the research loop continues at inference is this example without its outcome.
    assert answer.ids[:start] == research_prefix(tok, MIRO_CONTEXT, MIRO_BASE, steps)


def test_a_tool_result_shows_the_title_and_url_a_rewrite_cites() -> None:
    assert formats.tool_result(TITLE_1, URL_1, SNIPPET_1) == RESULT_1
    assert formats.tool_result("", URL_1, SNIPPET_1) == f"[{URL_1}]({URL_1}) {SNIPPET_1}"
    assert formats.tool_result("", "", "7856") == "7856"  # the calculator's answer has no source
    assert formats.tool_result("", "", "") == ""  # the toolset had no answer


def test_a_base_needing_no_research_is_task_1_with_the_base_sent_to_the_user(
    tok: PreTrainedTokenizerFast,
) -> None:
    ex = research_first(tok, WHATS_UP, "not much.", ("User", "not much."))
    check_shape(ex, "research_query")
    assert decode(tok, ex.ids) == "<user> What's up?<sentinel> not much.<User> not much.<eos>"
    assert paper(decode(tok, ex.ids)) == "What's up? RESPONSE not much. User, not much."
    assert masked(tok, ex) == "<User> not much.<eos>"
    assert research_first(tok, MIRO_CONTEXT, MIRO_BASE, ("TS", MIRO_QUERY)) == research_query(
        tok, MIRO_CONTEXT, MIRO_BASE, MIRO_QUERY
    )


def test_research_step_validates(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="step"):
        research_step(tok, MIRO_CONTEXT, MIRO_BASE, [], ("User", MIRO_ANSWER))
    with pytest.raises(ValueError, match="outcome"):
        research_step(tok, MIRO_CONTEXT, MIRO_BASE, [STEP_1], ("Base", "x"))
    with pytest.raises(ValueError, match="outcome"):
        research_first(tok, MIRO_CONTEXT, MIRO_BASE, ("Base", "x"))
    with pytest.raises(ValueError, match="research step is a Step"):
        research_step(tok, MIRO_CONTEXT, MIRO_BASE, [(MIRO_QUERY, SNIPPET_1)], ("User", MIRO_ANSWER))


# across formats --------------------------------------------------------------------------------


def all_examples(tok: PreTrainedTokenizerFast) -> list[Example]:
    return [
        generative(tok, WHATS_UP, "not much."),
        discriminative(tok, WHATS_UP, "not much.", "CORRECT", 1),
        research_query(tok, MIRO_CONTEXT, MIRO_BASE, MIRO_QUERY),
        research_first(tok, WHATS_UP, "not much.", ("User", "not much.")),
        research_step(tok, MIRO_CONTEXT, MIRO_BASE, [STEP_1], ("User", MIRO_ANSWER)),
        formats.document(tok, TITLE_1, SNIPPET_2),
    ]


def test_a_document_is_plain_text_with_the_loss_on_every_token(tok: PreTrainedTokenizerFast) -> None:
    example = formats.document(tok, TITLE_1, SNIPPET_2)
    assert decode(tok, example.ids) == f" {TITLE_1}\n{SNIPPET_2}<eos>"
    assert all(example.loss_mask)
    assert example.kind == "document"
    assert not {special_id(tok, t) for t in SPECIAL_TOKENS if t != "<eos>"} & set(example.ids)
    # Special-token strings in a document are text (rule 1).
    assert decode(tok, formats.document(tok, "", "a <sentinel> b").ids) == " a <sentinel> b<eos>"


def test_every_kind_round_trips_through_decode(tok: PreTrainedTokenizerFast) -> None:
    for ex in all_examples(tok):
        assert tok.encode(decode(tok, ex.ids), add_special_tokens=False) == ex.ids
        assert max(ex.ids) < len(tok)
        assert ex.kind in formats.KINDS


def test_formats_identical_after_save_load(tok: PreTrainedTokenizerFast, tmp_path) -> None:
    loaded = load(save(tok, tmp_path / "tok"))
    assert all_examples(loaded) == all_examples(tok)


def test_describe_is_json_and_carries_the_rules() -> None:
    info = describe()
    assert info["format_version"] == FORMAT_VERSION == "2"
    assert info["special_tokens"] == list(SPECIAL_TOKENS)
    assert set(info["kinds"]) == {
        "generative",
        "discriminative",
        "research_query",
        "research_step",
        "document",
    }
    assert "<sentinel>" in info["rules"]
    assert "[title](url) snippet" in info["rules"]  # what a tool result shows the model
    assert "<User> base<eos>" in info["rules"]  # the no-research outcome of task 1
    assert "loss" in info["rules"].lower()
    assert json.loads(json.dumps(info)) == info


def test_modules_do_not_import_django() -> None:
    code = "import sys, trainer.formats, trainer.tokenizer; print('django' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
