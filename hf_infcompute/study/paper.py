"""The paper's published figures at 200M tokens (arXiv 2509.14786), for the report's side-by-side table."""

PAPER_BUDGET = "200M tokens (DCLM, Llama 3 tokenizer)"
STANDARD_BEST = 3.7497  # 600M preset; the 1.4B preset is worse (3.7643): the standard recipe overfits in N
REGULARIZED_ASYMPTOTE = 3.43  # 0.05 / N^1.02 + 3.43
ENSEMBLE_ASYMPTOTE = 3.27  # K -> inf at 300M with the member rule (3.34 with single-model hyperparameters)
JOINT_ASYMPTOTE = 3.17
EFFICIENCY_REGULARIZED = 2.29
EFFICIENCY_JOINT = 5.17
EFFICIENCY_MEASURED_ENSEMBLE = 3.75  # a real 5 x 1.4B ensemble, no extrapolation
DISTILLED_STUDENT = 3.36  # 300M student of an 8 x 300M ensemble
RETAINED_SHARE = 0.83
SELF_DISTILLATION = (3.7103, 3.4373)  # teacher, student with a 1:1 real:synthetic mix
BENCHMARK_AVERAGES = {"best regularized 1.4B": 60.73, "300M K=5 ensemble": 63.00, "distilled 300M": 62.19}
DATA_LAW_EXPONENTS = "0.23-0.24"  # L(D) = A / D^alpha + E for each recipe's best loss per D (and its asymptotes)
DATA_LAW_ASYMPTOTES = "1.89-1.96"
