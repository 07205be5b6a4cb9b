"""Infinity (FoundationVision/Infinity): bitwise next-scale text-to-image generation, the model
FastVAR prunes, behind the VAR family's step-wise API, controllers and pruning."""
