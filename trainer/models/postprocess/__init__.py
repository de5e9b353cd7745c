"""Test-time decoding shared by every head: batched, fixed-size, on dettool's ops.

Each head writes its test-time path once, as a module here (or built from the pieces here).
``predict`` runs it eagerly (the ops' reference kernels) and the deploy graph traces the same
module, so eager output equals the exported graph by construction. Nothing here knows of ONNX.
"""
