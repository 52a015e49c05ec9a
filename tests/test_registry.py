"""The registry pattern behind AttentionInterface/AttentionMaskInterface: global vs local, scoping, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from reference_impl.attention import ALL_ATTENTION_FUNCTIONS, AttentionInterface, eager_attention_forward
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask, sdpa_mask
from reference_impl.registry import GeneralInterface, scoped_registration


class Greetings(GeneralInterface):
    """A throwaway registry whose functions take one positional argument."""

    _global_mapping: ClassVar[dict[str, Callable[..., Any]]] = {"hello": str.upper}
    _example_call = (("name",), {})


class MoreGreetings(Greetings):
    """Declares no mapping: it must get its own copy of its parent's, not share it."""


def shout(name: str) -> str:
    return name.upper() + "!"


def whisper(name: str) -> str:
    return name.lower()


@pytest.fixture(autouse=True)
def _clean_registries() -> Iterator[None]:
    saved = {
        cls: dict(cls._global_mapping)
        for cls in (Greetings, MoreGreetings, AttentionInterface, AttentionMaskInterface)
    }
    yield
    for cls, mapping in saved.items():
        cls._global_mapping.clear()
        cls._global_mapping.update(mapping)


def test_register_as_a_call_returns_the_function_and_every_instance_sees_it() -> None:
    a, b = Greetings(), Greetings()
    assert Greetings.register("shout", shout) is shout
    assert a["shout"] is shout and b["shout"] is shout
    assert Greetings()["shout"]("hi") == "HI!"


def test_register_as_a_decorator_keeps_the_name_bound_to_the_function() -> None:
    @Greetings.register("quiet")
    def quiet(name: str) -> str:
        return name.lower()

    assert callable(quiet) and quiet("HI") == "hi"
    assert Greetings()["quiet"] is quiet


def test_each_registry_class_has_its_own_mapping() -> None:
    Greetings.register("shout", shout)
    assert "shout" not in MoreGreetings()
    MoreGreetings.register("whisper", whisper)
    assert "whisper" not in Greetings()
    assert "hello" in MoreGreetings()  # inherited entries are copied, not shared
    assert AttentionInterface._global_mapping is not AttentionMaskInterface._global_mapping
    assert AttentionInterface._global_mapping is not GeneralInterface._global_mapping


def test_instance_assignment_is_local_and_shadows_the_class_wide_entry() -> None:
    mine, other = Greetings(), Greetings()
    mine["hello"] = whisper
    assert mine["hello"] is whisper
    assert other["hello"] is str.upper
    assert Greetings._global_mapping["hello"] is str.upper
    del mine["hello"]
    assert mine["hello"] is str.upper


def test_reads_merge_local_and_global_keys() -> None:
    registry = Greetings()
    registry["shout"] = shout
    registry["hello"] = whisper  # shadows, does not add a key
    assert sorted(registry) == ["hello", "shout"]
    assert len(registry) == 2
    assert registry.valid_keys() == list(registry.keys())


def test_unknown_key_lists_the_registered_ones() -> None:
    with pytest.raises(
        KeyError, match=r"'nope' is not a registered attention function; registered: \['eager', 'sdpa'\]"
    ):
        ALL_ATTENTION_FUNCTIONS["nope"]
    with pytest.raises(KeyError, match=r"mask builder; registered: \['eager', 'sdpa'\]"):
        ALL_MASK_ATTENTION_FUNCTIONS["nope"]


def test_deleting_through_an_instance_only_removes_a_local_override() -> None:
    with pytest.raises(KeyError, match="registered class-wide: use unregister"):
        del Greetings()["hello"]
    assert Greetings.unregister("hello") is str.upper
    with pytest.raises(KeyError, match="'hello' is not registered in Greetings"):
        Greetings.unregister("hello")


def test_registering_a_different_function_under_a_taken_key_is_refused_unless_overwrite() -> None:
    Greetings.register("shout", shout)
    Greetings.register("shout", shout)  # the same function again: a no-op
    with pytest.raises(ValueError, match=r"'shout' is already registered to shout; pass overwrite=True"):
        Greetings.register("shout", whisper)
    assert Greetings.register("shout", whisper, overwrite=True) is whisper
    assert Greetings()["shout"] is whisper


def test_registered_restores_the_previous_function_and_the_absence() -> None:
    with Greetings.registered("hello", whisper) as fn:
        assert fn is whisper and Greetings()["hello"] is whisper
    assert Greetings()["hello"] is str.upper
    with Greetings.registered("new", shout):
        assert "new" in Greetings()
    assert "new" not in Greetings()


def test_registered_restores_even_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"), Greetings.registered("new", shout):
        raise RuntimeError("boom")
    assert "new" not in Greetings()


@pytest.mark.parametrize("key", [3, None, ("a",)])
def test_a_non_string_key_is_a_type_error(key: object) -> None:
    with pytest.raises(TypeError, match=r"key=.* must be a str naming the function"):
        Greetings.register(key, shout)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        Greetings.register(key)  # type: ignore[arg-type]  # the decorator form fails at once, too


def test_a_non_callable_is_a_type_error_naming_the_key() -> None:
    with pytest.raises(TypeError, match="registered under 'x' must be callable, got int"):
        AttentionInterface.register("x", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be callable"):
        ALL_ATTENTION_FUNCTIONS["x"] = "eager"  # type: ignore[assignment]


def test_a_function_with_the_wrong_signature_is_refused_with_the_call_it_must_take() -> None:
    def takes_three(query, key, value):  # type: ignore[no-untyped-def]
        return query, None

    with pytest.raises(
        TypeError, match=r"registered under 'bad' has signature \(query, key, value\), which cannot take"
    ):
        AttentionInterface.register("bad", takes_three)
    assert "bad" not in ALL_ATTENTION_FUNCTIONS

    def no_kwargs(batch_size, q_length, kv_length):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(TypeError, match="mask builder no_kwargs registered under 'bad'"):
        AttentionMaskInterface.register("bad", no_kwargs)


def test_the_attention_registry_accepts_transformers_shaped_functions() -> None:
    def my_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):  # type: ignore[no-untyped-def]
        return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout)

    assert AttentionInterface.register("mine", my_attention) is my_attention
    assert AttentionMaskInterface.register("mine", eager_mask) is eager_mask
    assert ALL_ATTENTION_FUNCTIONS.get_interface("mine", eager_attention_forward) is my_attention


def test_get_interface_is_strict_about_unknown_names() -> None:
    assert (
        ALL_ATTENTION_FUNCTIONS.get_interface("eager", sdpa_mask) is eager_attention_forward
    )  # registered here
    AttentionInterface.unregister("eager")
    assert (
        ALL_ATTENTION_FUNCTIONS.get_interface("eager", sdpa_mask) is sdpa_mask
    )  # transformers: the model's default
    with pytest.raises(KeyError, match="'flash' is not a registered attention function"):
        ALL_ATTENTION_FUNCTIONS.get_interface("flash", eager_attention_forward)


def test_scoped_registration_on_any_registry_class_restores_it() -> None:
    with scoped_registration(Greetings, "hello", shout):
        assert Greetings()["hello"] is shout
    assert Greetings()["hello"] is str.upper


@pytest.mark.oracle
def test_transformers_registries_share_our_read_write_semantics_and_are_restored() -> None:
    import transformers

    before = dict(transformers.AttentionInterface._global_mapping)
    theirs, other = transformers.AttentionInterface(), transformers.AttentionInterface()
    theirs["local_only"] = eager_attention_forward  # instance assignment is local there too
    assert "local_only" in theirs and "local_only" not in other
    with scoped_registration(transformers.AttentionInterface, "mine", eager_attention_forward):
        assert other["mine"] is eager_attention_forward
    assert transformers.AttentionInterface._global_mapping == before


@pytest.mark.oracle
def test_version_guard_transformers_register_returns_none() -> None:
    import transformers

    try:
        returned = transformers.AttentionInterface.register("guard_probe", eager_attention_forward)
    finally:
        transformers.AttentionInterface._global_mapping.pop("guard_probe", None)
    assert returned is None, (
        f"transformers {transformers.__version__} AttentionInterface.register now returns {returned!r}: it "
        "can be used as a decorator; update reference_impl/registry.py's NOTE and lesson 06"
    )


@pytest.mark.oracle
def test_version_guard_transformers_subclass_without_mapping_shares_the_base_dict() -> None:
    import transformers
    from transformers.utils.generic import GeneralInterface as HFGeneralInterface

    class Forgetful(HFGeneralInterface):  # declares no _global_mapping
        pass

    try:
        Forgetful.register("leak_probe", eager_attention_forward)
        leaked = "leak_probe" in HFGeneralInterface._global_mapping
    finally:
        HFGeneralInterface._global_mapping.pop("leak_probe", None)
    assert leaked, (
        f"transformers {transformers.__version__} GeneralInterface now gives each subclass its own mapping; "
        "update reference_impl/registry.py's NOTE (point 2) and lesson 06"
    )
