"""AGREE's losses as pure functions: late-interaction scores, the global contrastive loss
over a batch, and the local loss that pulls a page's patch relevance toward a teacher map."""

from agree_core.losses.contrastive import hardest_negative_softplus, info_nce
from agree_core.losses.local import LOCAL_LOSSES, local_loss, mismatch_first, patch_relevance
from agree_core.losses.scores import late_interaction_scores

__all__ = ["late_interaction_scores", "hardest_negative_softplus", "info_nce", "patch_relevance",
           "local_loss", "mismatch_first", "LOCAL_LOSSES"]
