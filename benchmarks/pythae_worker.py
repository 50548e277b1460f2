"""pythae's side of `benchmarks/vs_pythae.py`; runs in a Python that has torch and pythae, not vizoo.

Reads one JSON command per line on stdin and answers with one JSON line on stdout:

- `{"op": "setup", "arrays": PATH, "batch_size": B, "k": K}`: loads the shared data and the
  trained weights (an `.npz` written by the vizoo side: the same 784-200-200-50 tanh MLPs),
  builds pythae's `IWAE` with them and an Adam optimizer;
- `{"op": "train", "precision": P, "examples": N}`: one timed pass of N training examples
  (forward, backward, Adam step: the work of pythae's trainer without its logging);
- `{"op": "eval", "precision": P, "examples": N, "k": K, "nll_batch": C}`: pythae's own
  importance-sampled `get_nll` over the first N test examples, timed.

P is "float32" or "bfloat16" (`torch.autocast` on the CPU, pythae's losses unchanged).
"""

import copy
import time

import numpy as np
import torch
from pythae.models import IWAE, IWAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from vs_pythae import serve  # this script's folder: the driver's serving loop (standard library only)


def _tanh_layers(sizes):
    return torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


def _tanh_mlp(layers, h):
    for layer in layers:
        h = torch.tanh(layer(h))
    return h


class Encoder(BaseEncoder):
    def __init__(self, input_dim, hidden, latent_dim):
        super().__init__()
        self.hidden = _tanh_layers([input_dim] + hidden)
        self.embedding = torch.nn.Linear(hidden[-1], latent_dim)
        self.log_var = torch.nn.Linear(hidden[-1], latent_dim)

    def forward(self, x):
        h = _tanh_mlp(self.hidden, x)
        return ModelOutput(embedding=self.embedding(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, latent_dim, hidden, output_dim):
        super().__init__()
        self.hidden = _tanh_layers([latent_dim] + hidden)
        self.logits = torch.nn.Linear(hidden[-1], output_dim)

    def forward(self, z):
        return ModelOutput(reconstruction=torch.sigmoid(self.logits(_tanh_mlp(self.hidden, z))))


def _load(linear, kernel, bias, scale=1.0):
    # Keras kernels are [in, out]; torch's Linear weights are [out, in].
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(scale * kernel.T))
        linear.bias.copy_(torch.from_numpy(scale * bias))


class Worker:
    def setup(self, arrays, batch_size, k):
        a = np.load(arrays)
        self.train_x = torch.from_numpy(a["train"])
        self.test_x = torch.from_numpy(a["test"])
        self.batch_size = batch_size
        hidden = [int(h) for h in a["hidden_units"]]
        input_dim, latent_dim = self.train_x.shape[1], int(a["latent_dim"])
        config = IWAEConfig(input_dim=(input_dim,), latent_dim=latent_dim, number_samples=k, reconstruction_loss="bce")
        encoder, decoder = Encoder(input_dim, hidden, latent_dim), Decoder(latent_dim, list(reversed(hidden)), input_dim)
        for layer, i in zip(encoder.hidden, range(len(hidden))):
            _load(layer, a[f"encoder_{i}_kernel"], a[f"encoder_{i}_bias"])
        _load(encoder.embedding, a["loc_kernel"], a["loc_bias"])
        # vizoo's head gives log sigma; pythae's gives log sigma^2.
        _load(encoder.log_var, a["log_scale_kernel"], a["log_scale_bias"], scale=2.0)
        for layer, i in zip(decoder.hidden, range(len(hidden))):
            _load(layer, a[f"decoder_{i}_kernel"], a[f"decoder_{i}_bias"])
        _load(decoder.logits, a["logits_kernel"], a["logits_bias"])
        self.model = IWAE(config, encoder=encoder, decoder=decoder)  # evaluated, never trained here
        self.trained = {}  # one copy per precision, each with its own Adam
        for precision in ("float32", "bfloat16"):
            model = copy.deepcopy(self.model)
            self.trained[precision] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
        return {"torch": torch.__version__, "threads": torch.get_num_threads()}

    def _autocast(self, precision):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")

    def train(self, precision, examples):
        model, optimizer = self.trained[precision]
        model.train()
        start = time.perf_counter()
        for i in range(0, examples, self.batch_size):
            x = self.train_x[i : i + self.batch_size]
            with self._autocast(precision):
                loss = model({"data": x}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        return {"seconds": time.perf_counter() - start}

    def eval(self, precision, examples, k, nll_batch):
        if k % nll_batch:
            raise ValueError(f"k must be a multiple of nll_batch (pythae draws k // nll_batch full batches). Received: k={k}, nll_batch={nll_batch}")
        self.model.eval()
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.no_grad(), self._autocast(precision):
            nll = -self.model.get_nll(self.test_x[:examples], n_samples=k, batch_size=nll_batch)
        return {"seconds": time.perf_counter() - start, "nll": float(nll)}


def main():
    serve(Worker())


if __name__ == "__main__":
    main()
