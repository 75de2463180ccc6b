"""The training engine: optimisation, checkpoints, logging and the loop.

Model code (``mtpg_aiaa.model``, ``backbone``, ``fusion``, ``data``) never imports this
package; the engine imports them.
"""
