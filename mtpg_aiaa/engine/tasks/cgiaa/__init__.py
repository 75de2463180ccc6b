"""CG-IAA's training tasks: ``cgiaa/vlap`` (contrastive CLIP), ``cgiaa/expert`` (one attribute
expert, ClipCap recipe) and ``cgiaa/score`` (MAP on cached critiques)."""
from .. import register_task
from .expert import build_expert_task
from .score import build_score_task
from .vlap import build_vlap_task

register_task("cgiaa/vlap")(build_vlap_task)
register_task("cgiaa/expert")(build_expert_task)
register_task("cgiaa/score")(build_score_task)
