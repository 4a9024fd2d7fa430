from .checkpoint_hook import SafeCheckpointHook  # noqa: F401
from .cpu_amp import CPUAmpOptimWrapper  # noqa: F401
from .finite_loss_hook import FiniteLossHook, NonFiniteLossError  # noqa: F401
from .resume import check_checkpoint, find_resumable_checkpoint  # noqa: F401
from .vis_hook import OVSegVisualizationHook  # noqa: F401
from .zero_shot_vocab_hook import ZeroShotVocabularyHook  # noqa: F401
