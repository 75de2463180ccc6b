"""CG-IAA's training tasks: ``cgiaa/vlap`` (contrastive CLIP), ``cgiaa/expert`` (one attribute
expert, ClipCap recipe) and ``cgiaa/score`` (MAP on cached critiques)."""
