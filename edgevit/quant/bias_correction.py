"""Bias correction (Nagel et al., 2019): the expected output shift caused by rounding a
Linear's weights to INT8, ``E[x] @ (W_q - W)``, is subtracted from its bias, on the ONNX
initializers (in place). No torch."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgevit.quant import graph as G


def bias_correct(model: Any, input_means: dict[str, np.ndarray]) -> list[str]:
    """Subtract ``E[x] @ (W_q - W)`` from the bias of each MatMul(+Add)/Gemm whose input
    mean is known (in place). Returns the corrected node names."""
    inits = G.initializers(model)
    cons = G.consumers(model)
    uses = G.use_counts(model)
    done = []
    for n in model.graph.node:
        lw = G.linear_weight(model, n, inits)
        if lw is None or n.input[0] not in input_means:
            continue
        wname, axis, transposed = lw
        w = G.to_array(inits[wname])
        dw = G.weight_fake_quant(w, axis) - w
        if transposed:
            dw = dw.T  # [K, N]
        mean = np.asarray(input_means[n.input[0]], dtype=np.float64)
        if mean.shape[0] != dw.shape[0]:
            continue
        shift = mean @ dw.astype(np.float64)  # [N]
        bias = None
        if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] in inits:
            bias = n.input[2]
        elif n.op_type == "MatMul":
            users = cons.get(n.output[0], [])
            if len(users) == 1 and users[0].op_type == "Add":
                other = [i for i in users[0].input if i != n.output[0]]
                if other and other[0] in inits and G.to_array(inits[other[0]]).shape == shift.shape:
                    bias = other[0]
        if bias is None or uses.get(bias, 0) != 1:
            continue
        G.store(inits[bias], G.to_array(inits[bias]) - shift)
        done.append(n.name)
    return done
