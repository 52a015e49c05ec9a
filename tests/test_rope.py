"""reference_impl.rope: init functions, the rotary module under dynamic_rope_update, and the rotation itself.

Oracle tests run against the installed transformers (5.22 and 4.57: configs are built in each version's
format).
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from reference_impl.rope import (
    ROPE_INIT_FUNCTIONS,
    RopeState,
    RotaryEmbedding,
    apply_rotary_pos_emb,
    dynamic_rope_update,
    read_rope_config,
    rotate_half,
)
from reference_impl.rope_init import llama3_wavelength_bands, yarn_correction_range
from reference_impl.workbook.tiny import rope_config_kwargs

V5 = Version(transformers.__version__).major >= 5
TINY = {"num_key_value_heads": 1, "intermediate_size": 32, "num_hidden_layers": 1, "vocab_size": 64}


def hf_config(rope: dict, *, theta: float = 10_000.0, model: str = "llama", **kw):
    """A real transformers config in the installed version's format: v5 rope_parameters, v4 rope_scaling +
    rope_theta."""
    from transformers import LlamaConfig, Phi3Config

    cls = {"llama": LlamaConfig, "phi3": Phi3Config}[model]
    kw = {"hidden_size": 64, "num_attention_heads": 2, **TINY, **kw}
    return cls(**rope_config_kwargs(rope, theta, model_type=model), **kw)


def their_init(rope_type: str, config):
    """transformers' init function for this type; 'default' lives on the model in 5.x."""
    from transformers import modeling_rope_utils as mru

    if rope_type == "default" and V5:
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

        # Phi-3's honours partial_rotary_factor, as 4.x's table entry and ours do (Llama 5.x's ignores it)
        return Phi3RotaryEmbedding.compute_default_rope_parameters
    return mru.ROPE_INIT_FUNCTIONS[rope_type]


LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
PHI3_LISTS = {
    "short_factor": [1.0 + 0.01 * i for i in range(48)],
    "long_factor": [1.0 + 0.5 * i for i in range(48)],
}
PHI3 = {
    "model": "phi3",
    "hidden_size": 192,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
}

# (id, rope dict, config kwargs, seq_len)
ORACLE_CASES = [
    ("default", {"rope_type": "default"}, {}, None),
    ("default-partial-0.5", {"rope_type": "default"}, {"model": "phi3", "partial_rotary_factor": 0.5}, None),
    ("linear", {"rope_type": "linear", "factor": 4.0}, {}, None),
    ("linear-partial-0.5", {"rope_type": "linear", "factor": 2.0}, {"partial_rotary_factor": 0.5}, None),
    ("dynamic-init", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 4096}, None),
    ("dynamic-below", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 4096}, 1000),
    ("dynamic-at", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 4096}, 4096),
    ("dynamic-above", {"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 4096}, 8192),
    (
        "dynamic-above-tensor",
        {"rope_type": "dynamic", "factor": 2.0},
        {"max_position_embeddings": 4096},
        torch.tensor(9000),
    ),
    ("yarn", YARN, {"max_position_embeddings": 16384}, None),
    (
        "yarn-mscale",
        {**YARN, "mscale": 1.0, "mscale_all_dim": 0.707},
        {"max_position_embeddings": 16384},
        None,
    ),
    (
        "yarn-betas-untruncated",
        {**YARN, "factor": 8.0, "beta_fast": 16, "beta_slow": 2, "truncate": False},
        {"max_position_embeddings": 32768},
        None,
    ),
    ("yarn-attention-factor", {**YARN, "attention_factor": 0.9}, {"max_position_embeddings": 16384}, None),
    ("llama3.1", LLAMA31, {"hidden_size": 256, "max_position_embeddings": 131072}, None),
    ("longrope-short", {"rope_type": "longrope", **PHI3_LISTS}, PHI3, None),
    ("longrope-short-at-L0", {"rope_type": "longrope", **PHI3_LISTS}, PHI3, 4096),
    ("longrope-long", {"rope_type": "longrope", **PHI3_LISTS}, PHI3, 4097),
]


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("rope", "kw", "seq_len"), [c[1:] for c in ORACLE_CASES], ids=[c[0] for c in ORACLE_CASES]
)
def test_init_function_is_bitwise_equal_to_transformers(rope, kw, seq_len):
    kw = dict(kw)
    theta = 500_000.0 if rope["rope_type"] == "llama3" else 10_000.0
    config = hf_config(rope, theta=theta, **kw)
    ours, ours_factor = ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, None, seq_len=seq_len)
    theirs, their_factor = their_init(rope["rope_type"], config)(config, None, seq_len=seq_len)
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs), f"max diff {(ours - theirs).abs().max()}"
    assert ours_factor == their_factor


@pytest.mark.oracle
def test_plain_dict_config_gives_the_same_frequencies_as_the_config_object():
    config = hf_config(LLAMA31, theta=500_000.0, hidden_size=256, max_position_embeddings=131072)
    as_dict = {
        "hidden_size": 256,
        "num_attention_heads": 2,
        "max_position_embeddings": 131072,
        "rope_parameters": {**LLAMA31, "rope_theta": 500_000.0},
    }
    v4_dict = {
        "head_dim": 128,
        "max_position_embeddings": 131072,
        "rope_theta": 500_000.0,
        "rope_scaling": LLAMA31,
    }
    expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    for cfg in (as_dict, v4_dict):
        got, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg)
        assert torch.equal(got, expected)


def _run_calls(module, calls, dtype=torch.float32):
    """Call a rotary module on each position_ids in turn; return (cos, sin) per call."""
    x = torch.zeros(1, dtype=dtype)
    return [module(x, pos) for pos in calls]


DYNAMIC_CALLS = [
    torch.arange(8)[None],
    torch.arange(40)[None].expand(2, -1),
    torch.arange(30)[None],
    torch.tensor([[41]]),
    torch.arange(10)[None],
]  # grow, keep, decode one past the cache, reset
LONGROPE_CALLS = [
    torch.arange(10)[None],
    torch.arange(40)[None],
    torch.arange(32)[None],
    torch.arange(33)[None],
    torch.arange(20)[None],
    torch.tensor([[32]]),
]  # L0 = 32: exactly at L0 is still short


def _undecorated(forward):
    """The plain forward under transformers' `@torch.no_grad()` and `@dynamic_rope_update` (both
    functools.wraps)."""
    while hasattr(forward, "__wrapped__"):
        forward = forward.__wrapped__
    return forward


def _with_our_decorator(their_class):
    """A subclass of transformers' rotary module whose forward carries our `dynamic_rope_update` instead of
    theirs."""
    forward = torch.no_grad()(dynamic_rope_update(_undecorated(their_class.forward)))
    return type(f"Ours{their_class.__name__}", (their_class,), {"forward": forward})


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["dynamic", "longrope"])
@pytest.mark.parametrize("ours_is", ["our-module", "their-module-under-our-decorator"])
def test_rotary_module_follows_transformers_state_sequence(kind, dtype, ours_is):
    """Ours (our module, or transformers' own with our `dynamic_rope_update`) against theirs, call by call."""
    if kind == "dynamic":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as Theirs

        config = hf_config({"rope_type": "dynamic", "factor": 2.0}, max_position_embeddings=16)
        calls = DYNAMIC_CALLS
    else:
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding as Theirs

        lists = {
            "short_factor": [1.0 + 0.01 * i for i in range(16)],
            "long_factor": [1.0 + 0.5 * i for i in range(16)],
        }
        config = hf_config(
            {"rope_type": "longrope", **lists},
            model="phi3",
            max_position_embeddings=128,
            original_max_position_embeddings=32,
        )
        calls = LONGROPE_CALLS
    ours_class = RotaryEmbedding if ours_is == "our-module" else _with_our_decorator(Theirs)
    ours, theirs = ours_class(config), Theirs(config)
    x = torch.zeros(1, dtype=dtype)
    for i, pos in enumerate(calls):
        (cos_o, sin_o), (cos_t, sin_t) = ours(x, pos), theirs(x, pos)
        where = f"call {i} (seq_len {int(pos.max()) + 1}), our max_seq_len_cached {ours.max_seq_len_cached}"
        assert torch.equal(ours.inv_freq, theirs.inv_freq), where
        assert ours.attention_scaling == theirs.attention_scaling, where
        assert ours.max_seq_len_cached == int(theirs.max_seq_len_cached), where
        assert cos_o.dtype == cos_t.dtype == dtype
        assert torch.equal(cos_o, cos_t) and torch.equal(sin_o, sin_t), where


def test_dynamic_state_machine_grows_keeps_and_resets():
    config = {
        "head_dim": 16,
        "max_position_embeddings": 16,
        "rope_parameters": {"rope_type": "dynamic", "factor": 2.0},
    }
    rotary = RotaryEmbedding(config)
    original = rotary.inv_freq.clone()
    seen = []
    for pos in DYNAMIC_CALLS:
        _run_calls(rotary, [pos])
        seen.append((rotary.rope_state.last_update, rotary.rope_state.max_seq_len_cached))
    assert seen == [("keep", 16), ("grow", 40), ("keep", 40), ("grow", 42), ("reset", 16)]
    assert torch.equal(rotary.inv_freq, original)


def test_longrope_switches_between_short_and_long_factors():
    lists = {"short_factor": [1.0] * 8, "long_factor": [4.0] * 8}
    config = {
        "head_dim": 16,
        "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "longrope", "original_max_position_embeddings": 32, **lists},
    }
    rotary = RotaryEmbedding(config)
    short = rotary.inv_freq.clone()
    seen = []
    for pos in LONGROPE_CALLS:
        _run_calls(rotary, [pos])
        seen.append(rotary.rope_state.last_update)
        expected = short / 4 if seen[-1] == "long" else short
        torch.testing.assert_close(rotary.inv_freq, expected, rtol=1e-6, atol=0)
    assert seen == ["short", "long", "short", "long", "short", "long"]
    assert rotary.attention_scaling == pytest.approx(math.sqrt(1 + math.log(4) / math.log(32)))


def test_rope_state_prints_every_decision_variable():
    config = {
        "head_dim": 16,
        "max_position_embeddings": 16,
        "rope_parameters": {"rope_type": "dynamic", "factor": 2.0},
    }
    rotary = RotaryEmbedding(config)
    _run_calls(rotary, [torch.arange(40)[None]])
    text = repr(rotary.rope_state)
    assert text == (
        "RopeState(rope_type='dynamic', original_max_seq_len=16, max_seq_len_cached=40, "
        "original_max_position_embeddings=16, attention_scaling=1.0, last_update='grow')"
    )
    assert isinstance(rotary.rope_state, RopeState) and "max_seq_len_cached=40" in repr(rotary)


@pytest.mark.oracle
@pytest.mark.skipif(
    not V5, reason="per-layer-type rotary modules (Gemma 3 with layer_type=) are transformers 5.x"
)
def test_our_decorator_on_gemma3_per_layer_type_module_is_bitwise_equal_to_theirs():
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding as Theirs

    lists = {
        "short_factor": [1.0 + 0.01 * i for i in range(8)],
        "long_factor": [1.0 + 0.5 * i for i in range(8)],
    }
    config = Gemma3TextConfig(
        **{**TINY, "num_hidden_layers": 2},
        hidden_size=64,
        num_attention_heads=2,
        head_dim=16,
        max_position_embeddings=16,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e6},
            "sliding_attention": {
                **{"rope_type": "longrope", **lists, "rope_theta": 1e4},
                "original_max_position_embeddings": 8,
            },
        },
    )
    ours, theirs = _with_our_decorator(Theirs)(config), Theirs(config)
    x = torch.zeros(1)
    decisions = []
    for i, pos in enumerate(DYNAMIC_CALLS):
        for layer_type in ("full_attention", "sliding_attention"):
            (cos_o, sin_o), (cos_t, sin_t) = ours(x, pos, layer_type), theirs(x, pos, layer_type)
            where = f"call {i}, seq_len {int(pos.max()) + 1}, {layer_type}"
            assert torch.equal(cos_o, cos_t) and torch.equal(sin_o, sin_t), where
            assert torch.equal(
                getattr(ours, f"{layer_type}_inv_freq"), getattr(theirs, f"{layer_type}_inv_freq")
            )
        cached = getattr(ours, "full_attention_max_seq_len_cached", ours.max_seq_len_cached)
        assert cached == int(getattr(theirs, "full_attention_max_seq_len_cached", theirs.max_seq_len_cached))
        decisions.append(cached)
    # the full-attention (dynamic) entry grew, kept, grew and reset, as in transformers
    assert decisions == [16, 40, 40, 42, 16]
    # the shared attributes were not touched by a per-layer-type call
    assert ours.max_seq_len_cached == 16 and not hasattr(ours, "inv_freq")
    # our own module, built for one layer type of the same config, follows the same sequence
    for layer_type in ("full_attention", "sliding_attention"):
        ours_one, theirs_all = RotaryEmbedding(config, layer_type=layer_type), Theirs(config)
        for pos in DYNAMIC_CALLS:
            (cos_o, sin_o), (cos_t, sin_t) = ours_one(x, pos), theirs_all(x, pos, layer_type)
            assert torch.equal(cos_o, cos_t) and torch.equal(sin_o, sin_t), (layer_type, ours_one.rope_state)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rotary_pos_emb_matches_transformers_forward_and_backward(dtype):
    from transformers.models.llama import modeling_llama as ml

    config = hf_config({"rope_type": "default"}, hidden_size=64, num_attention_heads=4)
    cos, sin = RotaryEmbedding(config)(torch.zeros(1, dtype=dtype), torch.arange(7)[None].expand(2, -1))
    q = torch.randn(2, 4, 7, 16, dtype=dtype, requires_grad=True)  # (B, H, T, D)
    k = torch.randn(2, 2, 7, 16, dtype=dtype, requires_grad=True)  # (B, H_kv, T, D)
    ours = apply_rotary_pos_emb(q, k, cos, sin)
    g_ours = torch.autograd.grad(sum((o * o).sum() for o in ours), (q, k))
    theirs = ml.apply_rotary_pos_emb(q, k, cos, sin)
    g_theirs = torch.autograd.grad(sum((t * t).sum() for t in theirs), (q, k))
    for a, b in zip((*ours, *g_ours), (*theirs, *g_theirs), strict=True):
        assert a.dtype == b.dtype == dtype
        assert torch.equal(a, b)
    assert torch.equal(rotate_half(q), ml.rotate_half(q))


def _interleaved_apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The GPT-J / original-Meta layout: pairs (0, 1), (2, 3), ... with the same frequencies."""
    half = x.shape[-1] // 2
    cos_i = cos[..., :half].repeat_interleave(2, dim=-1).unsqueeze(1)  # (B, 1, T, D)
    sin_i = sin[..., :half].repeat_interleave(2, dim=-1).unsqueeze(1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((-x2, x1), dim=-1).flatten(-2)  # [-x1, x0, -x3, x2, ...]
    return x * cos_i + rotated * sin_i


@pytest.mark.oracle
def test_interleaved_layout_does_not_match_transformers_until_the_weights_are_permuted():
    from transformers.models.llama import modeling_llama as ml

    cos, sin = RotaryEmbedding({"head_dim": 16, "max_position_embeddings": 32})(
        torch.zeros(1), torch.arange(9)[None]
    )
    q = torch.randn(1, 2, 9, 16)
    theirs, _ = ml.apply_rotary_pos_emb(q, q, cos, sin)
    interleaved = _interleaved_apply(q, cos, sin)
    assert (interleaved - theirs).abs().max() > 0.1
    # the fix transformers' Llama conversion script applies: dims (0, 2, 4, ..., 1, 3, 5, ...) become halves
    perm = torch.cat([torch.arange(0, 16, 2), torch.arange(1, 16, 2)])
    torch.testing.assert_close(
        _interleaved_apply(q, cos, sin)[..., perm],
        ml.apply_rotary_pos_emb(q[..., perm], q[..., perm], cos, sin)[0],
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.oracle
def test_partial_rotary_apply_matches_phi3():
    from transformers.models.phi3 import modeling_phi3 as mp

    config = hf_config(
        {"rope_type": "default"},
        model="phi3",
        hidden_size=64,
        num_attention_heads=2,
        partial_rotary_factor=0.5,
    )
    cos, sin = RotaryEmbedding(config)(torch.zeros(1), torch.arange(5)[None])
    assert cos.shape == (1, 5, 16)
    q, k = torch.randn(1, 2, 5, 32), torch.randn(1, 2, 5, 32)
    for a, b in zip(
        apply_rotary_pos_emb(q, k, cos, sin), mp.apply_rotary_pos_emb(q, k, cos, sin), strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(
        apply_rotary_pos_emb(q, k, cos, sin)[0][..., 16:], q[..., 16:]
    )  # the rest passes through


@pytest.mark.oracle
@pytest.mark.parametrize(
    "rope", [LLAMA31, {"rope_type": "dynamic", "factor": 2.0}], ids=["llama3", "dynamic"]
)
def test_tiny_llama_logits_are_bitwise_equal_with_our_rotary_module(rope):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = hf_config(
        rope,
        theta=500_000.0,
        hidden_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=16,
    )
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 24))  # longer than max_position_embeddings: dynamic grows
    with torch.no_grad():
        theirs = model(ids).logits
        model.model.rotary_emb = RotaryEmbedding(config)
        ours = model(ids).logits
    assert torch.equal(ours, theirs)


# --- version guards: what changed between transformers 4.x and 5.x, which the lesson teaches ---


@pytest.mark.oracle
def test_version_guard_default_left_rope_init_functions_in_v5():
    from transformers import modeling_rope_utils as mru

    if V5:
        assert "default" not in mru.ROPE_INIT_FUNCTIONS, (
            f"transformers {transformers.__version__} has ROPE_INIT_FUNCTIONS['default'] again; update "
            "reference_impl/rope_init.py's docstring and the lesson's version notes"
        )
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        assert hasattr(LlamaRotaryEmbedding, "compute_default_rope_parameters")
    else:
        assert "default" in mru.ROPE_INIT_FUNCTIONS
    assert "default" in ROPE_INIT_FUNCTIONS  # ours keeps it in both
    missing = set(mru.ROPE_INIT_FUNCTIONS) - set(ROPE_INIT_FUNCTIONS) - {"proportional"}
    assert not missing, (
        f"transformers {transformers.__version__} added rope types {missing}; add them or list them"
    )


@pytest.mark.oracle
def test_version_guard_config_keys():
    config = hf_config({"rope_type": "linear", "factor": 2.0}, theta=5000.0)
    if V5:
        assert config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}, (
            f"transformers {transformers.__version__} changed rope_parameters' layout; update "
            "read_rope_config"
        )
    else:
        assert not hasattr(config, "rope_parameters"), (
            "transformers 4.x gained rope_parameters; update the lesson"
        )
        assert config.rope_theta == 5000.0 and config.rope_scaling["factor"] == 2.0
    assert read_rope_config(config).base == 5000.0


@pytest.mark.oracle
def test_version_guard_longrope_switch_keeps_the_inv_freq_address_from_5_23():
    """5.23 switches LongRoPE's `inv_freq` in place (CUDA graphs replay from one address); ours, as <= 5.22,
    rebinds it. (The dynamic-NTK growth still registers a new buffer in 5.25.)"""
    from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding as Theirs

    lists = {"short_factor": [1.0] * 16, "long_factor": [1.0 + 0.5 * i for i in range(16)]}
    config = hf_config(
        {"rope_type": "longrope", **lists},
        model="phi3",
        max_position_embeddings=128,
        original_max_position_embeddings=32,
    )
    same_address = {}
    for side, module in (("ours", RotaryEmbedding(config)), ("theirs", Theirs(config))):
        module(torch.zeros(1), torch.arange(8)[None])  # short factors
        before, old = module.inv_freq.data_ptr(), module.inv_freq.clone()
        module(torch.zeros(1), torch.arange(40)[None])  # past 32 positions: the long factors
        assert not torch.equal(module.inv_freq, old), side
        same_address[side] = module.inv_freq.data_ptr() == before
    in_place = Version(transformers.__version__) >= Version("5.23")
    assert same_address == {"ours": False, "theirs": in_place}, (
        f"transformers {transformers.__version__}: inv_freq kept its address {same_address}; 5.23 made the "
        "LongRoPE switch copy in place. Update the README's compatibility table (lesson 04)."
    )
    from reference_impl.workbook.envcheck import differences_from_pin

    notes = [d.what for d in differences_from_pin(transformers.__version__) if d.lesson == "04"]
    assert any("in place" in n for n in notes) == same_address["theirs"], notes


@pytest.mark.oracle
def test_version_guard_apply_rotary_pos_emb_dropped_position_ids_in_v5():
    from transformers.models.llama import modeling_llama as ml

    theirs = ml.apply_rotary_pos_emb
    if isinstance(theirs, torch.nn.Module):
        # with `kernels` installed (a dependency from transformers 5.25 on) the hub decorator makes it a
        # module
        theirs = theirs.forward
    names = list(inspect.signature(theirs).parameters)
    if V5:
        assert names == ["q", "k", "cos", "sin", "unsqueeze_dim"], (
            f"transformers {transformers.__version__} changed apply_rotary_pos_emb's signature to {names}"
        )
    else:
        assert names == ["q", "k", "cos", "sin", "position_ids", "unsqueeze_dim"]
    assert list(inspect.signature(apply_rotary_pos_emb).parameters) == [
        "q",
        "k",
        "cos",
        "sin",
        "unsqueeze_dim",
    ]


# --- where transformers only warns and we raise ---


@pytest.mark.oracle
def test_factor_below_one_is_computed_by_transformers_and_refused_by_us():
    from transformers import modeling_rope_utils as mru

    config = hf_config({"rope_type": "linear", "factor": 0.125})
    theirs, _ = mru.ROPE_INIT_FUNCTIONS["linear"](config, None)
    default, _ = ROPE_INIT_FUNCTIONS["default"](hf_config({"rope_type": "default"}))
    torch.testing.assert_close(
        theirs, default * 8
    )  # every frequency 8x faster: positions squeezed, not stretched
    with pytest.raises(ValueError, match=r"\['factor'\]=0.125 is below 1; expected factor >= 1"):
        ROPE_INIT_FUNCTIONS["linear"](config)


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("rope", "pattern"),
    [
        (
            {**LLAMA31, "low_freq_factor": 4.0, "high_freq_factor": 1.0},
            r"\['low_freq_factor'\]=4.0 >= .*\['high_freq_factor'\]=1.0",
        ),
        ({**YARN, "beta_fast": 1.0, "beta_slow": 32.0}, r"\['beta_fast'\]=1.0 <= .*\['beta_slow'\]=32.0"),
    ],
    ids=["llama3-reversed-band", "yarn-reversed-betas"],
)
def test_reversed_bands_are_computed_by_transformers_and_refused_by_us(rope, pattern):
    from transformers import modeling_rope_utils as mru

    config = hf_config(rope, max_position_embeddings=131072)
    theirs, _ = mru.ROPE_INIT_FUNCTIONS[rope["rope_type"]](config, None)
    assert torch.isfinite(theirs).all()  # a number comes back, from a band that runs backwards
    with pytest.raises(ValueError, match=pattern + r".*transformers only warns here"):
        ROPE_INIT_FUNCTIONS[rope["rope_type"]](config)


@pytest.mark.oracle
def test_longrope_list_of_wrong_length_fails_late_in_transformers_and_early_here():
    from transformers import modeling_rope_utils as mru

    # LlamaConfig only warns about the length (Phi3Config refuses it when the config is built)
    rope = {
        "rope_type": "longrope",
        "short_factor": [1.0] * 47,
        "long_factor": [1.0] * 48,
        "original_max_position_embeddings": 4096,
    }
    config = hf_config(rope, hidden_size=192, max_position_embeddings=131072)
    # 5.x: a broadcasting RuntimeError; 4.57 trips earlier on its missing factor (TypeError); neither names
    # the key
    with pytest.raises((RuntimeError, TypeError)) as theirs:
        mru.ROPE_INIT_FUNCTIONS["longrope"](config, None)
    assert "short_factor" not in str(theirs.value)
    with pytest.raises(ValueError, match=r"\['short_factor'\] has length 47; expected dim // 2 = 48"):
        ROPE_INIT_FUNCTIONS["longrope"](config)


# --- bad input: each error names the key, the value and what was expected ---


def _cfg(rope: dict, head_dim: int = 16, **kw) -> dict:
    return {"head_dim": head_dim, "max_position_embeddings": 64, "rope_parameters": rope, **kw}


@pytest.mark.parametrize(
    ("config", "exc", "pattern"),
    [
        (
            _cfg({"rope_type": "ntk"}),
            KeyError,
            r"\['rope_type'\]='ntk' is not a known rope type; known: \['default'",
        ),
        (
            _cfg({"rope_type": "linear"}),
            KeyError,
            r"\['factor'\] is missing; rope_type='linear' requires \['factor'\]",
        ),
        (
            _cfg({"rope_type": "longrope", "short_factor": [1.0] * 8}),
            KeyError,
            r"\['long_factor'\] is missing; rope_type='longrope' requires \['short_factor', 'long_factor'\]",
        ),
        (
            _cfg({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}),
            KeyError,
            r"'high_freq_factor'",
        ),
        (_cfg({"rope_type": "dynamic", "factor": 0.5}), ValueError, r"\['factor'\]=0.5 is below 1"),
        (_cfg({"rope_type": "yarn", "factor": 0.25}), ValueError, r"\['factor'\]=0.25 is below 1"),
        (
            _cfg({"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 7}),
            ValueError,
            r"\['long_factor'\] has length 7; expected dim // 2 = 8",
        ),
        (
            _cfg({"rope_type": "default"}, head_dim=9),
            ValueError,
            r"int\(head_dim=9 \* partial_rotary_factor=1.0\) = 9 is odd; expected an even number",
        ),
        (
            _cfg({"rope_type": "default", "partial_rotary_factor": 0.5}, head_dim=10),
            ValueError,
            r"= 5 is odd",
        ),
        (
            {"max_position_embeddings": 64},
            KeyError,
            r"no 'head_dim' and no 'hidden_size'/'num_attention_heads'",
        ),
        ({"head_dim": 16}, KeyError, r"no 'max_position_embeddings'"),
        (
            {
                "head_dim": 16,
                "max_position_embeddings": 64,
                "rope_theta": 1e4,
                "rope_scaling": {"type": "linear", "factor": 0.5},
            },
            ValueError,
            r"rope_scaling\['factor'\]=0.5",
        ),
        (
            _cfg({"rope_type": "linear", "factor": 2.0}, rope_scaling={"rope_type": "linear", "factor": 4.0}),
            ValueError,
            r"both rope_parameters=.* and rope_scaling=.*disagree on \{'factor': 4.0\}",
        ),
        (
            _cfg({"rope_type": "default"}, rope_scaling={"type": "linear", "factor": 2.0}),
            ValueError,
            r"disagree on \{'type': 'linear', 'factor': 2.0\}",
        ),
        (
            _cfg({"rope_type": "default", "rope_theta": 10_000.0}, rope_theta=500_000.0),
            ValueError,
            r"rope_parameters\['rope_theta'\]=10000.0 disagrees with the top-level rope_theta=500000.0",
        ),
        (
            _cfg({"rope_type": "default", "partial_rotary_factor": 0.5}, partial_rotary_factor=0.25),
            ValueError,
            r"\['partial_rotary_factor'\]=0.5 disagrees with the top-level partial_rotary_factor=0.25",
        ),
        (_cfg({"rope_type": "default", "rope_theta": 0}), ValueError, r"rope_theta=0 .*expected a base > 0"),
        (
            _cfg({"rope_type": "default"}, rope_theta=-1.0),
            ValueError,
            r"rope_theta=-1.0 .*expected a base > 0",
        ),
        (
            _cfg({"rope_type": "default", "partial_rotary_factor": 0}),
            ValueError,
            r"partial_rotary_factor=0; expected 0 < partial_rotary_factor <= 1",
        ),
        (
            _cfg({"rope_type": "default"}, partial_rotary_factor=1.5),
            ValueError,
            r"partial_rotary_factor=1.5; expected 0 < partial_rotary_factor <= 1",
        ),
        (
            _cfg({"rope_type": "default", "partial_rotary_factor": 0.05}),
            ValueError,
            r"= 0 is zero; expected a positive even number",
        ),
        (
            {"head_dim": 0, "hidden_size": 64, "num_attention_heads": 4, "max_position_embeddings": 64},
            ValueError,
            r"head_dim=0; expected a positive int",
        ),
        (
            _cfg({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}),
            ValueError,
            r"\['low_freq_factor'\]=4.0 >= rope_parameters\['high_freq_factor'\]=1.0; expected "
            r"low_freq_factor < high_freq_factor",
        ),
        (
            _cfg({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 2.0}),
            ValueError,
            r"\['low_freq_factor'\]=2.0 >= ",
        ),
        (
            _cfg({"rope_type": "yarn", "factor": 4.0, "beta_fast": 1.0, "beta_slow": 32.0}),
            ValueError,
            r"\['beta_fast'\]=1.0 <= rope_parameters\['beta_slow'\]=32.0; expected beta_fast > beta_slow",
        ),
        (
            _cfg({"rope_type": "yarn", "factor": 4.0, "beta_fast": 0}),
            ValueError,
            r"\['beta_fast'\]=0 <= rope_parameters\['beta_slow'\]=1; expected beta_fast > beta_slow",
        ),
    ],
    ids=[
        "unknown-type",
        "linear-no-factor",
        "longrope-no-long",
        "llama3-no-high",
        "dynamic-factor",
        "yarn-factor",
        "longrope-length",
        "odd-dim",
        "odd-partial-dim",
        "no-head-dim",
        "no-max-pos",
        "v4-key-name",
        "both-styles-disagree-on-factor",
        "both-styles-disagree-on-type",
        "theta-inside-and-top-level-disagree",
        "partial-inside-and-top-level-disagree",
        "theta-zero",
        "theta-negative",
        "partial-zero",
        "partial-above-one",
        "partial-gives-no-pair",
        "head-dim-zero",
        "llama3-low-above-high",
        "llama3-low-equals-high",
        "yarn-beta-fast-below-slow",
        "yarn-beta-fast-zero",
    ],
)
def test_bad_config_raises_naming_key_value_and_expectation(config, exc, pattern):
    rope_type = (config.get("rope_parameters") or config.get("rope_scaling") or {}).get(
        "rope_type", "default"
    )
    with pytest.raises(exc, match=pattern):
        RotaryEmbedding(config)
    if rope_type in ROPE_INIT_FUNCTIONS:
        with pytest.raises(exc, match=pattern):
            ROPE_INIT_FUNCTIONS[rope_type](config)


def test_nested_rope_parameters_need_a_layer_type():
    nested = _cfg(
        {
            "full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
        }
    )
    with pytest.raises(KeyError, match="nested per layer type"):
        read_rope_config(nested)
    sliding = RotaryEmbedding(nested, layer_type="sliding_attention")
    full = RotaryEmbedding(nested, layer_type="full_attention")
    assert sliding.rope_type == "linear" and read_rope_config(nested, "full_attention").base == 1e6
    assert sliding.inv_freq[0] == 0.5 and full.inv_freq[0] == 1.0


# --- golden values (TRANSFORMERS_NOTES §1.4 anchors, hand-checkable) ---


def test_rotate_half_golden():
    assert rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [-3.0, -4.0, 1.0, 2.0]


def test_llama31_keeps_29_pairs_blends_6_divides_29():
    config = {
        "head_dim": 128,
        "max_position_embeddings": 131072,
        "rope_parameters": {**LLAMA31, "rope_theta": 500_000.0},
    }
    default, _ = ROPE_INIT_FUNCTIONS["default"](config)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    ratio = scaled / default
    assert llama3_wavelength_bands(read_rope_config(config)) == (2048.0, 8192.0)
    assert int((ratio == 1).sum()) == 29
    assert int(torch.isclose(ratio, torch.tensor(1 / 8), rtol=1e-6).sum()) == 29
    assert bool((ratio[29:35] > 1 / 8).all() and (ratio[29:35] < 1).all())


def test_yarn_and_longrope_golden_numbers():
    yarn = {"head_dim": 128, "max_position_embeddings": 16384, "rope_parameters": YARN}
    assert yarn_correction_range(read_rope_config(yarn)) == (20, 46)
    assert ROPE_INIT_FUNCTIONS["yarn"](yarn)[1] == pytest.approx(1.138629, abs=1e-6)
    mscale = {**yarn, "rope_parameters": {**YARN, "mscale": 1.0, "mscale_all_dim": 0.707}}
    assert ROPE_INIT_FUNCTIONS["yarn"](mscale)[1] == pytest.approx(1.036993, abs=1e-6)
    longrope = {
        "head_dim": 8,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4},
    }
    assert ROPE_INIT_FUNCTIONS["longrope"](longrope)[1] == pytest.approx(1.190238, abs=1e-6)


@pytest.mark.parametrize(("seq_len", "new_base"), [(8192, 30530.0), (16384, 72200.0)])
def test_dynamic_ntk_base_golden(seq_len, new_base):
    config = {
        "head_dim": 128,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "dynamic", "factor": 2.0},
    }
    inv_freq, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, seq_len=seq_len)
    implied_base = float(inv_freq[1].double() ** (-64))  # θ_1 = b'^(-2/d), d = 128
    assert implied_base == pytest.approx(new_base, rel=2e-3)


# --- properties ---


@given(
    head_dim=st.sampled_from([4, 8, 16, 32]),
    base=st.floats(100.0, 1e6),
    m=st.integers(0, 2048),
    n=st.integers(0, 2048),
    shift=st.integers(0, 2048),
    seed=st.integers(0, 2**16),
)
def test_rotation_preserves_norms_and_scores_depend_only_on_the_distance(head_dim, base, m, n, shift, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)
    rotary = RotaryEmbedding({"head_dim": head_dim, "max_position_embeddings": 4096, "rope_theta": base})

    def score(pos_q: int, pos_k: int) -> float:
        cos, sin = rotary(q, torch.tensor([[pos_q, pos_k]]))
        q_rot, _ = apply_rotary_pos_emb(q, q, cos[:, :1], sin[:, :1])
        k_rot, _ = apply_rotary_pos_emb(k, k, cos[:, 1:], sin[:, 1:])
        torch.testing.assert_close(q_rot.norm(), q.norm(), rtol=1e-5, atol=0)  # a rotation keeps the norm
        return float((q_rot * k_rot).sum())

    scale = float(q.norm() * k.norm())
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=2e-3 * scale)


@given(factor=st.floats(1.0, 64.0), base=st.floats(100.0, 1e6), head_dim=st.sampled_from([8, 64, 128]))
def test_linear_scaling_divides_every_frequency_by_the_factor(factor, base, head_dim):
    config = {
        "head_dim": head_dim,
        "max_position_embeddings": 64,
        "rope_parameters": {"rope_type": "linear", "factor": factor, "rope_theta": base},
    }
    default, _ = ROPE_INIT_FUNCTIONS["default"](config)
    linear, _ = ROPE_INIT_FUNCTIONS["linear"](config)
    assert torch.equal(linear, default / factor)


@given(factor=st.floats(1.0, 16.0), lengths=st.lists(st.integers(1, 256), min_size=1, max_size=5))
def test_dynamic_is_a_no_op_within_the_original_length(factor, lengths):
    config = {
        "head_dim": 32,
        "max_position_embeddings": 256,
        "rope_parameters": {"rope_type": "dynamic", "factor": factor},
    }
    dynamic = RotaryEmbedding(config)
    plain = RotaryEmbedding({"head_dim": 32, "max_position_embeddings": 256})
    for length in lengths:
        pos = torch.arange(length)[None]
        for a, b in zip(dynamic(torch.zeros(1), pos), plain(torch.zeros(1), pos), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert dynamic.rope_state.last_update == "keep" and dynamic.rope_state.max_seq_len_cached == 256


@given(rope_type=st.sampled_from(sorted(ROPE_INIT_FUNCTIONS)), seq_len=st.sampled_from([None, 10, 100]))
def test_inputs_are_unchanged_after_every_call(rope_type, seq_len):
    rope = {
        "rope_type": rope_type,
        "factor": 2.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "short_factor": [1.0] * 4,
        "long_factor": [2.0] * 4,
        "original_max_position_embeddings": 32,
    }
    config = {"head_dim": 8, "max_position_embeddings": 64, "rope_parameters": rope}
    before = copy.deepcopy(config)
    ROPE_INIT_FUNCTIONS[rope_type](config, seq_len=seq_len)
    assert config == before
    q, k = torch.randn(1, 2, 3, 8), torch.randn(1, 1, 3, 8)
    q0, k0 = q.clone(), k.clone()
    cos, sin = RotaryEmbedding(config)(q, torch.arange(3)[None])
    apply_rotary_pos_emb(q, k, cos, sin)
    assert torch.equal(q, q0) and torch.equal(k, k0)


@pytest.mark.oracle
@pytest.mark.parametrize(
    ("q_dtype", "cos_dtype"),
    [
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.bfloat16),
    ],
)
@pytest.mark.parametrize("rotary_dim", [8, 4])
def test_apply_rotary_pos_emb_output_dtype_is_transformers_and_the_docstring_says_so(
    q_dtype, cos_dtype, rotary_dim
):
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb as theirs

    q, k = torch.randn(1, 2, 3, 8, dtype=q_dtype), torch.randn(1, 1, 3, 8, dtype=q_dtype)
    cos, sin = torch.randn(1, 3, rotary_dim, dtype=cos_dtype), torch.randn(1, 3, rotary_dim, dtype=cos_dtype)
    q_o, k_o = apply_rotary_pos_emb(q, k, cos, sin)
    q_t, k_t = theirs(q, k, cos, sin)
    promoted = torch.promote_types(q_dtype, cos_dtype)
    assert q_o.dtype == k_o.dtype == q_t.dtype == k_t.dtype == promoted
    assert torch.equal(q_o, q_t) and torch.equal(k_o, k_t)
    doc = " ".join(apply_rotary_pos_emb.__doc__.split())
    assert "type promotion" in doc and "come back in float32" in doc and "same shapes and dtypes" not in doc


@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "object"])
@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, r"disagree on \{'factor': 4.0\}"),
        (
            {"rope_theta": 500_000.0},
            r"\['rope_theta'\]=10000.0 disagrees with the top-level rope_theta=500000.0",
        ),
        ({"rope_theta": 0}, r"\['rope_theta'\]=10000.0 disagrees with the top-level rope_theta=0"),
    ],
    ids=["scaling", "theta", "theta-zero"],
)
def test_both_config_styles_disagreeing_are_refused_for_dicts_and_objects_alike(as_object, extra, pattern):
    from types import SimpleNamespace

    config = _cfg({"rope_type": "linear", "factor": 2.0, "rope_theta": 10_000.0}, **extra)
    agreeing = _cfg({"rope_type": "linear", "factor": 2.0, "rope_theta": 10_000.0})
    if as_object:
        config, agreeing = SimpleNamespace(**config), SimpleNamespace(**agreeing)
    with pytest.raises(ValueError, match=pattern):
        read_rope_config(config)
    assert read_rope_config(agreeing).base == 10_000.0
