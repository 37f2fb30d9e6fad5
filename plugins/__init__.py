"""Yunnao's SDK for capability authors: errors shared by every layer, hook specs and the
``capability`` decorator (the latter two arrive with the plugin SDK).

This package depends on pluggy and pydantic only, so authors install a light SDK.
"""
