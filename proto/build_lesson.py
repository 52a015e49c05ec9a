import nbformat as nbf

cells = []


def md(s):
    cells.append(nbf.v4.new_markdown_cell(s.strip("\n")))


def code(s, tags=None):
    c = nbf.v4.new_code_cell(s.strip("\n"))
    if tags:
        c.metadata["tags"] = tags
    cells.append(c)


md(r"""
# Lesson 08 — Capstone: one tiny Llama from all six components, trained, stretched, pruned and proven

Every earlier lesson took one component out of a real model and looked at it alone. Here they go back in, all at
once: a small Llama-shaped decoder whose rotary embeddings, attention, masks, feed-forward, layers and head pruning
all come from `reference_impl`. It has the parameter names of transformers' `LlamaForCausalLM`, so the same weights
run in both. The package ships it trained on a task that needs positions, which lets us finally measure what the
RoPE lesson could only draw: what each scaling rule buys **beyond the length a model was trained on**.

By the end you will be able to:

1. name, for every line of a Llama decoder, the component of the workbook that computes it, and prove the whole
   model equal to transformers' (logits and gradients, every scaling rule);
2. read a length-extension table: which RoPE rule keeps a trained model working at 2, 4 and 8 times its training
   length, where each one fails, and what a short fine-tune (Position Interpolation) recovers;
3. predict a training step's memory for each checkpointing policy from the formulas of lessons 01 and 03, and
   check the prediction against an exact CPU count;
4. prune heads by importance and see which heads the task relies on (sharp "pointer" heads);
5. plug a new piece into the model: an attention function registered by name, a scaling plan, a Conv1D layout, a
   memory prediction for a policy the lesson did not measure.
""")

md("## Set-up")
code("""
from reference_impl.workbook.lesson import setup

setup(threads=1)  # the tiny model's ops are too small to gain from a second thread
""", ["nbval-ignore-output"])

md(r"""
## 1. The idea: one decoder, six components

A Llama decoder layer is two residual branches, `x + attn(norm(x))` and then `x + mlp(norm(x))`, stacked $L$ times
between an embedding and an output projection. Each piece of it is something an earlier lesson took apart:

| in the model | component | lesson |
|---|---|---|
| `rotary_emb`, the rotation of q and k | `rope.RotaryEmbedding` (any rule of `ROPE_INIT_FUNCTIONS`), `apply_rotary_pos_emb` | 04 |
| the attention itself, looked up **by name** | `attention.ALL_ATTENTION_FUNCTIONS[config.attn_implementation]` | 06 |
| its causal / padding mask | `masking.ALL_MASK_ATTENTION_FUNCTIONS[...]` (`sdpa_mask`, `eager_mask`) | 06 |
| the feed-forward, position by position | `chunking.apply_chunking_to_forward` | 03 |
| every layer | a `checkpointing.GradientCheckpointingLayer`, switched by `set_gradient_checkpointing(policy=...)` | 01 |
| fewer heads | `pruning_heads.prune_heads` (its Llama path: `prune_linear_layer` on q, k, v, o) | 05 |
| GPT-2's layout of the same weights | `conv1d.linear_to_conv1d` (exercise 3) | 02 |

The model is deliberately tiny — $L = 2$ layers, $C = 64$, $H = 4$ heads of $D = 16$, a vocabulary of $V = 32$ —
so that it trains on one CPU thread in about two minutes and every measurement below runs live.
""")
code("""
import dataclasses
import inspect

import matplotlib.pyplot as plt
import torch

from reference_impl.workbook.capstone import CapstoneConfig, CapstoneForCausalLM
from reference_impl.workbook import capstone_experiment as cx

model = cx.load_capstone_model()
print(model)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters; config: {model.config}")
""")

md(r"""
## 2. Our implementation

The attention layer is transformers' `LlamaAttention` line for line, with our components where theirs are: the
rotation is `reference_impl.rope.apply_rotary_pos_emb`, and the attention function is looked up in **our** registry
at every call — so registering a new name is all it takes to run the model with a new attention (exercise 1).
""")
code("""
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaDecoderLayer

from reference_impl.workbook.capstone import CapstoneAttention, CapstoneDecoderLayer, CapstoneModel
from reference_impl.workbook.source import beside

beside(CapstoneAttention.forward, LlamaAttention.forward)
""")
md(r"""
The layer differs from transformers' in two places, both on purpose. The feed-forward (with its norm: both act on
each position alone) goes through `apply_chunking_to_forward`, so `chunk_size_feed_forward = c > 0` runs it on $c$
positions at a time, exactly as BERT does. And the class derives from **our** `GradientCheckpointingLayer`, whose
wrapped `forward` checkpoints itself once `set_gradient_checkpointing` switched it on.
""")
code("""
beside(CapstoneDecoderLayer.forward, LlamaDecoderLayer.forward)
""")
md(r"""
The model builds the mask once, from the builder registered under the **same name** as the attention function, and
refuses a name that has none (transformers would pass `attention_mask=None` there and lose the padding, lesson 06's
first trap):
""")
code("""
print(inspect.getsource(CapstoneModel.forward))
""")

md(r"""
## 3. Proof: the same weights in transformers' `LlamaForCausalLM`

For every scaling rule the model supports, we build transformers' Llama tiny from a `LlamaConfig` of the same
shape, load **our** state dict into it (`strict=True`: every name and shape must match), and compare logits and
every parameter's gradient on 96 positions (three times the trained length, so dynamic NTK really recomputes its
base). The float32 operations are the same and in the same order, so we ask for **bitwise** equality.
""")
code("""
from transformers import LlamaForCausalLM

from reference_impl.workbook.capstone import to_llama_config
from reference_impl.workbook.lesson import compare

ids = torch.randint(0, 32, (2, 96), generator=torch.Generator().manual_seed(0))
change = {}  # how far each rule moves the logits from plain RoPE: the proof is not comparing like with like
for rule in cx.RULES:
    for attn in ("sdpa", "eager"):
        config = dataclasses.replace(cx.scaled_config(model.config, rule, 4), attn_implementation=attn)
        ours = CapstoneForCausalLM(config)
        ours.load_state_dict(model.state_dict())
        theirs = LlamaForCausalLM(to_llama_config(config, attn_implementation=attn))
        theirs.load_state_dict(ours.state_dict(), strict=True)
        logits, expected = ours(ids), theirs(ids).logits
        logits.pow(2).mean().backward()
        expected.pow(2).mean().backward()
        grads = dict(theirs.named_parameters())
        worst = max((p.grad - grads[n].grad).abs().max().item() for n, p in ours.named_parameters())
        compare(logits, expected, name=f"{rule:>7} {attn:>5}: logits")
        assert worst == 0.0, (rule, attn, worst)
        change[rule] = logits.detach() if rule == "default" else (logits.detach() - change["default"]).abs().max()
print("every parameter gradient bitwise equal, for every rule and both attention functions")
print("largest logit change from plain RoPE:", ", ".join(f"{r} {float(v):.1f}" for r, v in change.items() if r != "default"))
""")
md(r"""
The check is not vacuous: the rules move the logits by the amounts on the last line, and each model still equals
its transformers twin exactly. `tests/workbook/test_capstone.py` proves the same equality after checkpointing, chunking and pruning, plus the
state dict loading the other way, transformers' weights into ours.
""")

md(r"""
## 4. A task that needs positions, and the trained model

**Key-value recall.** Among random symbols, four keys each stand right before a value; the sequence ends with the
four keys again, in another order, and at each of them the model must name the value that followed it:
""")
code("""
input_ids, labels = cx.task_batch(1, cx.TRAINED_LENGTH, torch.Generator().manual_seed(3))
keys = range(cx.VOCAB_SIZE - cx.NUM_KEYS, cx.VOCAB_SIZE)
print("tokens:", " ".join(f"K{t - min(keys)}" if t in keys else str(t) for t in input_ids[0].tolist()))
print("labels:", " ".join("." if y == cx.IGNORE_INDEX else str(y) for y in labels[0].tolist()))
""")
md(r"""
Two attention steps solve it, and both are about positions: a head that looks **exactly one position back** (so
that each value learns which key preceded it), and a head that finds the earlier copy of the current key **wherever
it is** (an induction head). RoPE gives the first a fixed relative offset, $\langle R_m q, R_n k\rangle$ depending on
$m - n$ only; the second needs the key match to hold at every distance the model will meet.

`scripts/train_capstone_model.py` trained the model at length 32 only, on one CPU thread, and recorded how:
""")
code("""
import json

record = json.loads(cx.CHECKPOINT.with_suffix(".json").read_text())
for key in ("made_by", "trained_length", "steps", "batch_size", "seed", "held_out_accuracy", "train_seconds"):
    print(f"{key:>18}: {record[key]}")
m = record["machine"]
print(f"{'machine':>18}: {m['processor']}, {m['torch_threads']} thread, torch {m['torch']}, transformers {m['transformers']}")
accuracy, loss = cx.evaluate(model, cx.task_batch(256, cx.TRAINED_LENGTH, torch.Generator().manual_seed(11)))
print(f"accuracy at the trained length, measured now: {accuracy:.3f} (loss {loss:.4f})")
""")

md(r"""
## 5. Stretched beyond the trained length: what scaling buys

Now the experiment lesson 04 promised. The same weights, RoPE rescaled by each rule with factor $s$ = the new
length over the trained one ($L_0 = 32$), evaluated at 1, 2, 4 and 8 times $L_0$ on the same held-out sequences for
every rule (64 sequences, 256 questions per length). **No fine-tuning**: RoPE has no weights, only the config changes.
The last row is the one exception: the model fine-tuned for 60 steps at length 128 with linear scaling, factor 4
(Position Interpolation's recipe; the second file the training script wrote).
""")
code("""
table = cx.length_extension(model)
tuned = cx.load_capstone_model(cx.FINETUNED_CHECKPOINT)
multiples = (1, 2, 4, 8)
table["linear 4x, fine-tuned"] = {
    m: cx.evaluate(tuned, cx.task_batch(64, m * cx.TRAINED_LENGTH, torch.Generator().manual_seed(1234 + m)))
    for m in multiples
}
tuned_record = json.loads(cx.FINETUNED_CHECKPOINT.with_suffix(".json").read_text())
print(f"fine-tune: {tuned_record['steps']} steps at length {tuned_record['finetune_length']}, "
      f"{tuned_record['train_seconds']:.0f} s on one CPU thread")
print(f"{'accuracy (loss)':>22}" + "".join(f"{f'{m}x = {m * cx.TRAINED_LENGTH}':>16}" for m in multiples))
for rule, row in table.items():
    print(f"{rule:>22}" + "".join(f"{acc:>9.2f} ({loss:4.2f})" for acc, loss in row.values()))
""")
code("""
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
for rule, row in table.items():
    style = dict(ls="--", marker="s") if "fine-tuned" in rule else dict(marker="o")
    left.plot(multiples, [row[m][0] for m in multiples], label=rule, **style)
    right.plot(multiples, [row[m][1] for m in multiples], label=rule, **style)
left.axhline(1 / (cx.VOCAB_SIZE - cx.NUM_KEYS), color="tab:gray", ls=":", label="chance")
left.set(xscale="log", ylabel="task accuracy", ylim=(0, 1.02), title="Recall beyond the trained length")
right.set(xscale="log", ylabel="cross-entropy (nats)", title="Loss beyond the trained length")
for ax in (left, right):
    ax.set_xscale("log", base=2)
    ax.set_xticks(multiples, [f"{m}x" for m in multiples])
    ax.set_xlabel("evaluated length / trained length (s = factor)")
left.legend(fontsize=8)
plt.show()
""")
md(r"""
What the table shows, rule by rule (the printed numbers above are the evidence):

* **Plain RoPE (default) extrapolates badly**: at 2x it already loses over 40% of the questions, and at 4x and 8x
  it answers one question in five, then barely more than chance (the dotted line). The induction head must match a key that now sits at distances never seen in
  training, and the slow pairs of the rotation have turned past anything it learned.
* **Linear (Position Interpolation) without fine-tuning helps the far keys but breaks the near ones**: dividing
  every angle by $s$ brings distant keys back into the trained range, but "one position back" now turns by $1/s$ of
  a step, and the previous-token head was trained on whole steps. It beats plain RoPE at every length, and stays
  below every rule that keeps the fast pairs.
* **Dynamic NTK, Llama 3 and YaRN keep the fast pairs and stretch the slow ones** — exactly the split this task
  needs — and they are the best rules at 2x without any training, dynamic NTK first. None of them holds at 8x:
  even the best loses more than half the questions there; **no rule rescues 8x without training**.
* **A short fine-tune changes the picture**: 60 steps (a few seconds, printed above the table) at length 128 with linear scaling bring
  4x back to nearly perfect, and 2x with it. The price is visible at 1x, where the fine-tuned model now runs
  with interpolated positions it was not trained on at that length, and at 8x, where the factor 4 is not enough.
  That is the Position Interpolation paper's claim in miniature: interpolation plus a short fine-tune (up to 1000
  steps for LLaMA there, 60 here), not interpolation alone.
""")

md(r"""
## 6. The pitfall: the scaling rule is not in the state dict

RoPE has no weights: `inv_freq` is a non-persistent buffer, rebuilt from the **config**. So loading a checkpoint
into a model whose config names another rope scaling raises nothing — every key matches — and silently changes
what the model computes. Here the trained weights are loaded into a model configured for linear scaling by 4:
""")
code("""
wrong = CapstoneForCausalLM(cx.scaled_config(model.config, "linear", 4))
result = wrong.load_state_dict(model.state_dict(), strict=True)
print(f"missing keys: {result.missing_keys}, unexpected keys: {result.unexpected_keys}")
at_1x = cx.task_batch(256, cx.TRAINED_LENGTH, torch.Generator().manual_seed(11))
print(f"accuracy at the trained length: right config {cx.evaluate(model, at_1x)[0]:.2f}, "
      f"linear x4 config {cx.evaluate(wrong.eval(), at_1x)[0]:.2f}")
""")
md(r"""
**Fix:** ship the config with the weights and build the model from it. transformers writes `rope_parameters` into
`config.json`; our `save_capstone_model` stores the config beside the tensors and `load_capstone_model` rebuilds
from it (the fine-tuned file comes back with its linear scaling, the base one with none).
""")
code("""
print("base file:      ", cx.load_capstone_model().config.rope_parameters)
print("fine-tuned file:", cx.load_capstone_model(cx.FINETUNED_CHECKPOINT).config.rope_parameters)
""")

md(r"""
## 7. The memory budget of a training step

How much memory does one training step take, with and without checkpointing? Lessons 01 and 03 give the formulas.
Measure in units $u$ = one $(B, T, C)$ float32 tensor, let each layer keep $a$ units for backward and the parts
outside the layers (embedding, final norm, head, loss) keep $E$. With $L$ layers and segments of $s$ layers:

$$\text{kept: none } = E + L a, \qquad \text{every layer } = E' + L, \qquad \text{segments of } s = E' + \lceil L/s\rceil$$

and the **peak** adds, while backward runs, the activations of the one layer (or segment) being recomputed:
$+a$ (every layer), $+s\,a$ (segments). FFN chunking (lesson 03) saves nothing for backward — the chunks' saved
tensors add up to the unchunked ones — so checkpointing plus chunking should keep what checkpointing keeps.

We measure a deeper copy of the capstone ($L = 9$, so that $\sqrt{L} = 3$ makes real segments; $B = 4$, $T = 128$),
fresh weights, one step of forward and backward, exactly, with `PeakMemory`. $a$ comes from `SavedTensors` on one
layer. $E$, $E'$ and what backward adds on top of the kept tensors are calibrated on the first two runs (so their
"kept" columns, and the first peak, agree by construction); the segment and chunking rows, and the other peaks, are
predictions.
""")
code("""
import math

from reference_impl.workbook.capstone_experiment import layer_saved_bytes, step_memory

deep = CapstoneConfig(num_hidden_layers=9, max_position_embeddings=128)
B, T, L = 4, 128, deep.num_hidden_layers
u = B * T * deep.hidden_size * 4
a = layer_saved_bytes(deep, B, T) / u
runs = {
    "no checkpointing": (deep, None),
    "every layer": (deep, "full"),
    "sqrt(L) segments": (deep, "sqrt"),
    "every layer + FFN chunks of 16": (dataclasses.replace(deep, chunk_size_feed_forward=16), "full"),
}
measured = {name: [b / u for b in step_memory(cfg, B, T, policy)] for name, (cfg, policy) in runs.items()}
E = measured["no checkpointing"][0] - L * a
E_ckpt = measured["every layer"][0] - L
s = round(math.sqrt(L))
predicted_kept = {"no checkpointing": E + L * a, "every layer": E_ckpt + L,
                  "sqrt(L) segments": E_ckpt + math.ceil(L / s), "every layer + FFN chunks of 16": E_ckpt + L}
extra = {"no checkpointing": 0, "every layer": a, "sqrt(L) segments": s * a, "every layer + FFN chunks of 16": a}
base_peak = measured["no checkpointing"][1] - measured["no checkpointing"][0]  # what backward adds on top
print(f"u = {u // 1024} KiB; a = {a:.2f} u per layer; E = {E:.2f} u; E' = {E_ckpt:.2f} u; s = {s}")
print(f"{'':>31} {'kept: measured':>15} {'predicted':>10} {'peak: measured':>15} {'predicted':>10}")
for name, (kept, peak) in measured.items():
    print(f"{name:>31} {kept:>14.2f}u {predicted_kept[name]:>9.2f}u {peak:>14.2f}u "
          f"{predicted_kept[name] + extra[name] + base_peak:>9.2f}u")
""")
code("""
fig, ax = plt.subplots(figsize=(8, 3.4))
names = list(measured)
x = range(len(names))
ax.bar([i - 0.2 for i in x], [measured[n][1] for n in names], width=0.4, label="peak, measured (exact)")
ax.bar([i + 0.2 for i in x], [predicted_kept[n] + extra[n] + base_peak for n in names], width=0.4,
       color="tab:gray", label="peak, predicted")
ax.set_xticks(list(x), [n.replace(" + ", "\\n+ ") for n in names], fontsize=8)
ax.set_ylabel(f"units of B·T·C ({u // 1024} KiB)")
ax.set_title(f"One training step, L = {L}, B = {B}, T = {T} (CPU, exact)")
ax.legend()
plt.show()
""")
md(r"""
Reading it: without checkpointing the step keeps $L a$ — every layer's $a \approx 18$ units — and its peak is
almost all of that. Checkpointing every layer keeps one unit per layer and pays one layer's $a$ back during
backward: about a quarter of the memory here. Segments of $\sqrt{L} = 3$ layers keep even less (3 boundaries
instead of 9), but recompute three layers at once, and with $a \approx 18 \gg 1$ that costs more than it saves:
the peak is **higher** than checkpointing every layer, as lesson 01's $M(s) = \lceil L/s\rceil + a s$, minimal at
$s = \sqrt{L/a} < 1$, predicts. FFN chunking inside checkpointed layers keeps exactly what checkpointing keeps and
lowers the peak only a little (the FFN's temporaries during recompute), as lesson 03 found. The measured peaks sit
within a few units of the predictions; the rest is the transient buffers of backward, which the formulas ignore.
""")

md(r"""
## 8. Pruned by importance

Which heads does the trained model need? We score every head with Michel et al.'s importance $E|\partial L /
\partial \xi_h|$ (lesson 05's `head_importance`, which works here because the model is laid out like a Llama), remove
the least important one, **recompute** the scores on the smaller model, and repeat. After each step: accuracy,
loss and parameters, on 256 held-out sequences.
""")
code("""
from reference_impl.workbook.capstone_experiment import attention_entropy, prune_greedily

score_batches = [cx.task_batch(64, cx.TRAINED_LENGTH, torch.Generator().manual_seed(s)) for s in range(4)]
eval_batch = cx.task_batch(256, cx.TRAINED_LENGTH, torch.Generator().manual_seed(11))
pruned = cx.load_capstone_model()
entropy_before = attention_entropy(pruned, eval_batch, positions="all")
rows = prune_greedily(pruned, score_batches, eval_batch, steps=5)
print(f"{'heads left':>10} {'pruned so far':>24} {'accuracy':>9} {'loss':>6} {'parameters':>11}")
for row in rows:
    left = 8 - sum(len(h) for h in row["pruned"].values())
    print(f"{left:>10} {str(row['pruned']):>24} {row['accuracy']:>9.3f} {row['loss']:>6.3f} {row['parameters']:>11,}")
""")
code("""
fig, ax = plt.subplots(figsize=(6, 3.2))
left_heads = [8 - sum(len(h) for h in r["pruned"].values()) for r in rows]
ax.plot(left_heads, [r["accuracy"] for r in rows], "o-", label="accuracy")
ax.set(xlabel="heads left (of 8)", ylabel="task accuracy", ylim=(0, 1.02), title="Greedy pruning by importance")
ax.invert_xaxis()
ax.legend()
plt.show()
""")
md(r"""
Now look inside. The **entropy** of a head's attention, $-\sum_j p_j \ln p_j$, is 0 for a head that looks at one
key only and $\ln n$ for one spread over $n$ keys (at most $\ln 32 \approx 3.47$ here). We average it where each
step of the task happens — at the **values** (the position after each key, which must look one back) and at the
**questions** (which must find the earlier key) — and beside it put what the task loses when that head alone is
zeroed (`mask_heads`, the reference pruning equals).
""")
code("""
from reference_impl.workbook.capstone_experiment import head_ablation

full_model = cx.load_capstone_model()
at_values = attention_entropy(full_model, eval_batch, positions="values")
at_questions = attention_entropy(full_model, eval_batch, positions="asked")
everywhere = attention_entropy(full_model, eval_batch, positions="all")
without = head_ablation(full_model, eval_batch)
print(f"{'':>14} {'entropy at the values':>22} {'at the questions':>17} {'everywhere':>11} {'accuracy without it':>20}")
for layer in range(2):
    for head in range(4):
        print(f"layer {layer} head {head} {at_values[layer][head]:>22.2f} {at_questions[layer][head]:>17.2f} "
              f"{everywhere[layer][head]:>11.2f} {without[layer, head]:>20.3f}")
""")
md(r"""
The pointer heads show themselves. **Layer 0, head 1** is sharp at the values (entropy near 0.2 nats: it looks at
one key) and nothing replaces it: zeroed alone, it takes the accuracy down to about a quarter — the one-step head
the task cannot do without. **Layer 1** has four heads that are all near zero at the questions — induction heads, each finding the value after the earlier copy of the key
— and they are redundant copies of one another: zeroing any one costs almost nothing, which is why greedy pruning
took two of them first for under 8 points. Low entropy says a head *points*; the ablation column says whether the
task needs what it points at (layer 0 head 0 is as sharp at the values as head 1, and costs a third of the
accuracy when zeroed, not three quarters).
""")

md(r"""
## 9. Exercises

Each has a self-check that says, in plain words, what differs.

### Exercise 1 — a query-chunked attention function, registered by name

Lesson 03 computed attention over chunks of queries to cap the $(B, H, T, S)$ score matrix. Make it a real attention
backend for the capstone: write `query_chunked_attention` with the attention-function contract (lesson 06), run
`eager_attention_forward` on chunks of `chunk_size` queries (every chunk sees **all** keys), register it, and register
a mask builder under the same name. Then the check runs the trained model with it, forward and backward.

*Predict first:* which mask builder must it be — `sdpa_mask` or `eager_mask` — and why?
""")
code("""
from reference_impl.attention import ALL_ATTENTION_FUNCTIONS, eager_attention_forward
from reference_impl.masking import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from reference_impl.workbook.checks import check_capstone_attention


def query_chunked_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, chunk_size=8, **kwargs):
    ### BEGIN SOLUTION
    outputs, weights = [], []
    for start in range(0, query.shape[2], chunk_size):
        rows = slice(start, start + chunk_size)  # queries start .. start + chunk_size - 1, all S keys
        out, w = eager_attention_forward(
            module, query[:, :, rows], key, value, attention_mask[:, :, rows], scaling=scaling, dropout=dropout
        )  # (B, c, H, D), (B, H, c, S)
        outputs.append(out)
        weights.append(w)
    return torch.cat(outputs, dim=1), torch.cat(weights, dim=2)  # (B, T, H, D), (B, H, T, S)
    ### END SOLUTION


# overwrite=True: re-running this cell after an edit registers the new function in place of the old one
ALL_ATTENTION_FUNCTIONS.register("query_chunked", query_chunked_attention, overwrite=True)
ALL_MASK_ATTENTION_FUNCTIONS.register("query_chunked", eager_mask)
check_capstone_attention("query_chunked")
""")
md(r"""
<details><summary>Hint</summary>

Slice the queries along dim 2 and the mask's query rows the same way (`attention_mask[:, :, rows]`); keys and
values stay whole. Concatenate the outputs along dim 1 (they come back as `(B, T, H, D)`). `sdpa_mask` may return
`None` for a causal batch, and `eager_attention_forward` reads `None` as a causal mask aligned to the bottom right of
each chunk — wrong for every chunk but the last. `eager_mask` always materialises the mask.
</details>
""")

md(r"""
### Exercise 2 — a scaling plan for 4x

You need the trained model to answer at length 128 (4x), **without fine-tuning**, with accuracy at least 0.6
(plain RoPE gets about 0.2). Choose a rule from `cx.RULES` and a factor $s \geq 1$. The factor need not equal the
length ratio: a rule that stretches "too much" or "too little" may do better. Predict from section 5 first, then
write `my_length_plan()` returning `(rule, factor)` and check.
""")
code("""
from reference_impl.workbook.checks import check_length_plan


def my_length_plan():
    ### BEGIN SOLUTION
    return "dynamic", 4.0  # NTK-style: the fast pairs untouched, the slow ones stretched, the base grown per length
    ### END SOLUTION


check_length_plan(my_length_plan)
""")
md(r"""
<details><summary>Hint</summary>

The rules that did best at 4x in section 5 keep the fast pairs (the one-step head) untouched and stretch only the
slow ones. Try two or three factors for one of them with `cx.evaluate(cx.with_rope(model, rule, factor), batch)`.
</details>
""")

md(r"""
### Exercise 3 — the same weights in GPT-2's layout

GPT-2 stores every projection as a `Conv1D`, whose weight is the `nn.Linear`'s transposed (lesson 02). Write
`to_gpt2_layout(model)` that replaces every `nn.Linear` inside the decoder layers (q, k, v, o, gate, up, down) by the
equivalent `Conv1D` and returns the model. The check proves the logits equal (to float32 rounding: another matmul
kernel).
""")
code("""
from torch import nn

from reference_impl.conv1d import linear_to_conv1d
from reference_impl.workbook.checks import check_gpt2_layout_copy


def to_gpt2_layout(model):
    ### BEGIN SOLUTION
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, linear_to_conv1d(child))  # weight (out, in) -> (in, out)
    return model
    ### END SOLUTION


check_gpt2_layout_copy(to_gpt2_layout)
""")
md(r"""
<details><summary>Hint</summary>

Walk `model.model.layers`, and in each layer the children of `self_attn` and `mlp`; `setattr(parent, name,
linear_to_conv1d(child))` swaps one in place. The forward never looks at the class, only calls it.
</details>
""")

md(r"""
### Exercise 4 — predict the memory of checkpointing every k-th layer

`set_gradient_checkpointing(model, every_n_layers=k)` checkpoints layers $0, k, 2k, \dots$ only. Write
`my_kept_units(a, e, num_layers, every_n_layers)`: the units a training step keeps for backward after the forward,
from section 7's quantities ($a$ per layer, $e = E'$ outside the layers). The check measures the 9-layer model
exactly for $k = 3$ and $k = 2$ and wants your prediction within 2 units.
""")
code("""
from reference_impl.workbook.checks import check_kept_prediction


def my_kept_units(a, e, num_layers, every_n_layers):
    ### BEGIN SOLUTION
    checkpointed = math.ceil(num_layers / every_n_layers)  # layers 0, k, 2k, ... keep their input only
    return e + checkpointed + (num_layers - checkpointed) * a
    ### END SOLUTION


check_kept_prediction(my_kept_units)
""")
md(r"""
<details><summary>Hint</summary>

Count the checkpointed layers first: for $L = 9$ and $k = 2$ they are 0, 2, 4, 6, 8. Each keeps 1 unit, each other
layer keeps $a$; the outside part $e$ does not change.
</details>
""")

md(r"""
## 10. Summary and further reading

* A Llama decoder is six components in one loop: rotary embeddings from a config's scaling rule, an attention
  function and its mask builder found **by name**, a position-wise feed-forward that can run in chunks, layers that
  can be checkpointed, and heads that can be pruned. Built from ours, it equals transformers' `LlamaForCausalLM`
  bitwise, forward and backward, for every scaling rule.
* **Beyond the trained length**, plain RoPE fails once keys sit at unseen distances; linear interpolation rescues
  far keys but blurs the near ones; NTK-style rules (dynamic, YaRN, Llama 3) keep the fast pairs and do best without
  training, up to a point; a short fine-tune at the new length (Position Interpolation) beats them all at the length
  it was tuned for.
* The scaling rule lives in the **config**, not in the weights: loading a checkpoint into a differently scaled
  model raises nothing and changes everything.
* A training step's memory follows the formulas: $L a$ without checkpointing, $L + a$ with every layer, and
  $\lceil L/s\rceil + s a$ for segments — which loses when $a \gg 1$, as in a transformer layer.
* Importance pruning finds the redundant heads; the heads a task relies on are the sharp, near-zero-entropy ones.

Papers: Su et al., *RoFormer* (arXiv:2104.09864); Chen et al., *Extending Context Window of Large Language Models
via Positional Interpolation* (arXiv:2306.15595); Peng et al., *YaRN* (arXiv:2309.00071); Olsson et al., *In-context
Learning and Induction Heads* (2022); Chen et al., *Training Deep Nets with Sublinear Memory Cost*
(arXiv:1604.06174); Michel, Levy, Neubig, *Are Sixteen Heads Really Better than One?* (arXiv:1905.10650).
transformers sources: `models/llama/modeling_llama.py`, `modeling_rope_utils.py`, `masking_utils.py`,
`modeling_layers.py`, `pytorch_utils.py`.

<details><summary>Versions</summary>

The model, its proof and the trained weights were made with torch 2.13.0 and transformers 5.22.2; the proof also
runs on 4.57 and 5.25 (`to_llama_config` writes `rope_scaling` + `rope_theta` for 4.x). transformers never had head
pruning for Llama; our `prune_heads` adds it for multi-head (not grouped-query) attention.
</details>

Previous: [07_distributed_checkpointing.ipynb](07_distributed_checkpointing.ipynb)
""")

nb = nbf.v4.new_notebook()
nb.cells = cells
nb.metadata = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
nbf.write(nb, "lessons/08_capstone.ipynb")
print("written")
