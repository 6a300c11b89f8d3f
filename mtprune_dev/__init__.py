"""Test and benchmark support for mtprune, not the library's API.

What ``tests/`` and ``benchmarks/`` need and the library does not: random decoders of released
shapes (:mod:`mtprune_dev.synthetic`), peak memory of a block of work (:mod:`mtprune_dev.memory`),
FLOPs counted by running a model (:mod:`mtprune_dev.flops`) and a mask that keeps every unit
(:mod:`mtprune_dev.masks`). It imports mtprune; mtprune never imports it.
"""
