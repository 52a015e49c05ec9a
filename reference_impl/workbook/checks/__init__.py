"""Self-checks for the lessons' exercises: `check_...(your_code)` prints one success line or says what
differs.

Each component has its module here (`checks/conv1d.py`, ...), built on `checks/_core.py`; every check is
re-exported below so a lesson can write `from reference_impl.workbook.checks import check_find_untransposed`.
"""

from reference_impl.workbook.checks._core import (
    CheckFailed,
    ExerciseNotFinished,
    check_tensor,
    first_difference,
    passed,
    student_call,
)
from reference_impl.workbook.checks.attention import (
    check_first_key_recorder,
    check_sliding_window_mask,
    check_trap_predictions,
)
from reference_impl.workbook.checks.capstone import (
    check_capstone_attention,
    check_gpt2_layout_copy,
    check_kept_prediction,
    check_length_plan,
)
from reference_impl.workbook.checks.checkpointing import (
    check_checkpointed_loss,
    check_fastest_under_budget,
    check_pick_every_n_layers,
)
from reference_impl.workbook.checks.chunking import (
    check_my_chunked_checkpointed_ffn,
    check_my_largest_chunk,
    check_my_query_chunked_attention,
)
from reference_impl.workbook.checks.conv1d import (
    check_find_untransposed,
    check_forward_bytes,
    check_split_c_attn,
)
from reference_impl.workbook.checks.distributed import (
    check_ddp_runs,
    check_hook_and_gather_counts,
    check_shard_bytes,
)
from reference_impl.workbook.checks.pruning import (
    check_heads_to_prune,
    check_rescored_order,
    check_surviving_c_attn_columns,
)
from reference_impl.workbook.checks.rope import (
    check_dynamic_ntk_prediction,
    check_my_relative_score,
    check_my_yarn_inv_freq,
)
from reference_impl.workbook.checks.warmup import check_peak_prediction, check_row_sums

__all__ = [
    "CheckFailed",
    "ExerciseNotFinished",
    "check_capstone_attention",
    "check_checkpointed_loss",
    "check_ddp_runs",
    "check_dynamic_ntk_prediction",
    "check_fastest_under_budget",
    "check_find_untransposed",
    "check_first_key_recorder",
    "check_forward_bytes",
    "check_gpt2_layout_copy",
    "check_heads_to_prune",
    "check_hook_and_gather_counts",
    "check_kept_prediction",
    "check_length_plan",
    "check_my_chunked_checkpointed_ffn",
    "check_my_largest_chunk",
    "check_my_query_chunked_attention",
    "check_my_relative_score",
    "check_my_yarn_inv_freq",
    "check_peak_prediction",
    "check_pick_every_n_layers",
    "check_rescored_order",
    "check_row_sums",
    "check_shard_bytes",
    "check_sliding_window_mask",
    "check_split_c_attn",
    "check_surviving_c_attn_columns",
    "check_tensor",
    "check_trap_predictions",
    "first_difference",
    "passed",
    "student_call",
]
