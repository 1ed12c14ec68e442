"""Improve prompt (issue 27, item 6): a local language model folder, loaded offline, asked with a
fixed instruction, generating greedily, its answer cleaned to one paragraph within the limit.

The model here is a tiny random Llama with a byte-level BPE tokenizer trained in-process: its
words are noise, so these tests check the plumbing, not the wording."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.errors import RequestError
from pipelines.prompt_helper import (INSTRUCTION, PromptHelper, PromptHelperError, clean_prompt)
from pipelines.prompting import CinematicControls
from pipelines.request import MAX_PROMPT_CHARS

CORPUS = [
    "a red ball rolls across a green meadow at dusk, warm colors, wide shot",
    "a cat walks on a roof at night under moonlight, the camera pans left",
    "subject, scene, motion, then light, time of day, shot size, camera movement and colour tone",
    "You rewrite short video ideas into prompts for the Wan2.2 video model.",
]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
SPECIALS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def make_tokenizer(chat: bool):
    """A byte-level BPE tokenizer (any text encodes, nothing is unknown) trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>")
    if chat:
        tokenizer.chat_template = TEMPLATE
    return tokenizer


def save_tiny_lm(folder: Path, chat: bool = True, context: int = 2048) -> Path:
    """A one-layer random Llama and its tokenizer, saved as a transformers folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(chat)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=context, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("chat-lm"))


@pytest.fixture(scope="module")
def helper(chat_folder) -> PromptHelper:
    return PromptHelper.load(chat_folder, max_new_tokens=24)


def spy_generate(helper: PromptHelper, monkeypatch, answer: str | None = None) -> list[dict]:
    """Record what reaches `generate`; answer with `answer`'s tokens instead when given."""
    calls: list[dict] = []
    original = helper.model.generate

    def generate(**kwargs):
        calls.append(kwargs)
        if answer is None:
            return original(**kwargs)
        tokens = helper.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([kwargs["input_ids"], tokens], dim=-1)

    monkeypatch.setattr(helper.model, "generate", generate)
    return calls


def test_loads_offline_and_is_deterministic(helper: PromptHelper) -> None:
    first = helper.improve("a red ball rolls")
    assert isinstance(first, str) and "\n" not in first
    assert helper.improve("a red ball rolls") == first  # greedy: the same text, the same answer
    assert helper.name == "chat-lm0"


def test_the_instruction_reaches_the_model_through_the_chat_template(helper, monkeypatch) -> None:
    calls = spy_generate(helper, monkeypatch)
    helper.improve("a cat on a roof", CinematicControls(time_of_day="night", camera_movement="pan left"))
    (call,) = calls
    seen = helper.tokenizer.decode(call["input_ids"][0])
    assert seen.startswith("<|system|>\n" + INSTRUCTION) and seen.endswith("<|assistant|>\n")
    assert "<|user|>\nVideo idea: a cat on a roof<|end|>" in seen
    assert "do not repeat them: night, pan left." in seen  # the chosen controls, named once
    assert call["do_sample"] is False and call["num_beams"] == 1 and call["max_new_tokens"] == 24


def test_image_mode_asks_for_motion_not_what_the_image_shows(helper) -> None:
    assert "not what the image already shows" in helper.model_input("x", image_mode=True)
    assert "not what the image already shows" not in helper.model_input("x")


def test_a_tokenizer_without_a_chat_template_gets_plain_text(tmp_path, monkeypatch) -> None:
    plain = PromptHelper.load(save_tiny_lm(tmp_path / "plain", chat=False), max_new_tokens=8)
    calls = spy_generate(plain, monkeypatch)
    plain.improve("a red ball")
    seen = plain.tokenizer.decode(calls[0]["input_ids"][0])
    assert seen == f"{INSTRUCTION}\n\nVideo idea: a red ball\n\nPrompt:"


def test_the_answer_is_cleaned_to_one_paragraph(helper, monkeypatch) -> None:
    spy_generate(helper, monkeypatch, answer='**Prompt:** "A red ball\nrolls across a meadow."'
                                             "\n\nNote: I added the meadow.")
    assert helper.improve("a red ball") == "A red ball rolls across a meadow."


def test_the_answer_is_cut_to_the_prompt_limit(helper, monkeypatch) -> None:
    spy_generate(helper, monkeypatch, answer="A red ball rolls. " * 400)
    cut = helper.improve("a red ball")
    assert len(cut) <= MAX_PROMPT_CHARS and cut.endswith("rolls.")
    assert len(helper.improve("a red ball", limit=50)) <= 50


def test_an_empty_answer_is_one_sentence(helper, monkeypatch) -> None:
    spy_generate(helper, monkeypatch, answer="  \n ")
    with pytest.raises(PromptHelperError, match="gave no usable text"):
        helper.improve("a red ball")


@pytest.mark.parametrize("text, words", [("   ", "Write a few words"),
                                         ("x" * (MAX_PROMPT_CHARS + 1), "shorten it")])
def test_unusable_prompts_are_refused_before_the_model_runs(helper, monkeypatch, text, words) -> None:
    calls = spy_generate(helper, monkeypatch)
    with pytest.raises(RequestError, match=words) as info:
        helper.improve(text)
    assert info.value.field == "prompt" and calls == []


def test_a_prompt_longer_than_the_models_context_is_refused(tmp_path) -> None:
    short = PromptHelper.load(save_tiny_lm(tmp_path / "short", context=128))
    with pytest.raises(RequestError, match="too long for the prompt model 'short'"):
        short.improve("a red ball rolls across a meadow " * 20)


def test_a_bad_control_is_refused(helper) -> None:
    with pytest.raises(ValueError, match="not a time of day"):
        helper.improve("a red ball", CinematicControls(time_of_day="teatime"))


@pytest.mark.parametrize("make, words", [
    (lambda tmp: tmp / "missing", "was not found"),
    (lambda tmp: "Qwen/Qwen2.5-1.5B-Instruct", "was not found; give the path of a local folder"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "does not hold a language model"),
    (lambda tmp: _only_config(tmp / "config-only"), "does not hold a language model"),
])
def test_an_unusable_folder_is_one_sentence(tmp_path, make, words) -> None:
    with pytest.raises(PromptHelperError, match=words) as info:
        PromptHelper.load(make(tmp_path))
    message = str(info.value)
    assert message.endswith(".") and "\n" not in message and str(tmp_path) not in message


def _only_config(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    return folder


def test_the_new_token_limit_is_checked(chat_folder) -> None:
    with pytest.raises(PromptHelperError, match="between 1 and"):
        PromptHelper.load(chat_folder, max_new_tokens=0)


@pytest.mark.parametrize("raw, clean", [
    ("Prompt: A cat walks.", "A cat walks."),
    ("**Improved prompt**: A cat walks.", "A cat walks."),
    ("“A cat walks on a roof.”", "A cat walks on a roof."),
    ("# A cat\n- walks\n- on a roof", "A cat walks on a roof"),
    ("A cat walks.\n\nThis prompt follows the guide.", "A cat walks."),
    ("  A cat\n   walks  slowly. ", "A cat walks slowly."),
])
def test_clean_prompt(raw: str, clean: str) -> None:
    assert clean_prompt(raw) == clean


def test_clean_prompt_cuts_at_a_sentence_or_a_word() -> None:
    assert clean_prompt("One two three. Four five six seven.", limit=20) == "One two three."
    assert clean_prompt("Onetwothree fourfive sixseven", limit=20) == "Onetwothree"
