"""How far ELBO training of a full-covariance encoder gets from exact log p(x) on the pPCA reference.

Probabilistic PCA with a non-orthogonal W (tests/ppca.py) has a correlated exact
posterior, which the full-covariance Gaussian family contains, so the ELBO can
reach log p(x) exactly. The decoder is frozen at the true parameters; only the
linear encoder trains (ELBO k=10, full batch of 400 examples, Adam). Prints the
gap log p(x) - ELBO (nats per example, ELBO estimated with 100 samples) at the
start and after each third of training, for two initialisations (Keras'
default, and zero weights, i.e. q = p(z)) and two learning-rate schedules
(constant 0.01, and 0.1 decayed exponentially to 0.001). The test
`test_training_a_full_covariance_encoder_with_the_elbo_reaches_the_exact_log_likelihood`
uses the last setting.

    python benchmarks/ppca_full_covariance.py
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.ppca


def gaps(zero_init, decay, steps, seed):
    import vizoo  # noqa: F401  (first: it filters TensorFlow's start-up notices)
    import keras
    import numpy as np
    import tensorflow as tf

    from tests import ppca
    from vizoo import evaluate
    from vizoo.losses import ELBOLoss

    weights, bias = ppca.ppca_parameters(seed=2, orthogonal=False)
    x = ppca.sample_data(400, weights, bias)
    log_px = ppca.exact_log_px(x, weights, bias).mean()
    keras.utils.set_random_seed(seed)
    model = ppca.ppca_decoder_vae(weights, bias, "full_covariance")
    if zero_init:
        for layer in (model.posterior.loc_layer, model.posterior.tril_layer):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    rate = keras.optimizers.schedules.ExponentialDecay(0.1, steps, 0.01) if decay else 0.01
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=ELBOLoss(k=10), steps_per_execution=100)
    data = tf.data.Dataset.from_tensors(x).repeat()
    result = [log_px - evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"]]
    for _ in range(3):
        model.fit(data, steps_per_epoch=steps // 3, epochs=1, verbose=0)
        result.append(log_px - evaluate.log_likelihood(model, x, k=100, seed=0)["elbo"])
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"| initialisation | learning rate | gap at start | after {args.steps // 3} | after {2 * args.steps // 3} | after {args.steps} |")
    print("|---|---|---|---|---|---|")
    for zero_init in (False, True):
        for decay in (False, True):
            row = gaps(zero_init, decay, args.steps, args.seed)
            print(
                f"| {'zero (q = p(z))' if zero_init else 'Keras default'} | {'0.1 -> 0.001' if decay else '0.01'} | "
                + " | ".join(f"{gap:.4f}" for gap in row)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
