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

For `benchmarks/vs_pythae_quality.py` (which model trains better, not which is faster):

- `{"op": "setup_fresh", "arrays": PATH, "batch_size": B, "k": K, "seed": S, "hidden_units": [...],
  "latent_dim": L}`: pythae's `IWAE` with PyTorch's own initialisation (seeded) and Adam, on the
  grey-level training images of the `.npz` (binarized afresh every epoch, seeded);
- `{"op": "train_epochs", "epochs": N}`: N more epochs (shuffled, dynamically binarized);
- `{"op": "save_weights", "path": PATH}`: the weights in vizoo's layout (Keras `[in, out]` kernels,
  the variance head as log sigma);
- `{"op": "save_state", "path": PATH}` and `{"op": "load_state", "path": PATH}`: the whole training state
  after `setup_fresh` (weights, Adam's state, the data generator's and torch's random states, the epochs
  done), so that a run stopped between epochs continues as it would have.
"""

import copy
import os
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

    def setup_fresh(self, arrays, batch_size, k, seed, hidden_units, latent_dim):
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.grey = torch.from_numpy(np.load(arrays)["train"])
        self.batch_size = batch_size
        input_dim = self.grey.shape[1]
        config = IWAEConfig(input_dim=(input_dim,), latent_dim=latent_dim, number_samples=k, reconstruction_loss="bce")
        self.encoder = Encoder(input_dim, list(hidden_units), latent_dim)
        self.decoder = Decoder(latent_dim, list(reversed(hidden_units)), input_dim)
        self.fresh = IWAE(config, encoder=self.encoder, decoder=self.decoder)
        self.optimizer = torch.optim.Adam(self.fresh.parameters(), lr=1e-3)
        self.epochs = 0
        return {"torch": torch.__version__, "parameters": sum(p.numel() for p in self.fresh.parameters())}

    def train_epochs(self, epochs):
        self.fresh.train()
        losses = []
        for _ in range(epochs):
            order = torch.randperm(len(self.grey), generator=self.generator)
            total = 0.0
            for i in range(0, len(order), self.batch_size):
                x = torch.bernoulli(self.grey[order[i : i + self.batch_size]], generator=self.generator)
                loss = self.fresh({"data": x}).loss
                loss.backward()
                self.optimizer.step()
                self.optimizer.zero_grad()
                total += float(loss.detach()) * len(x)
            losses.append(total / len(order))
            self.epochs += 1
        return {"epochs": self.epochs, "losses": losses}

    def save_state(self, path):
        state = {"model": self.fresh.state_dict(), "optimizer": self.optimizer.state_dict(), "epochs": self.epochs,
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)  # a kill while saving leaves the last state whole
        return {"path": path, "epochs": self.epochs}

    def load_state(self, path):
        state = torch.load(path, weights_only=False)
        self.fresh.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epochs = state["epochs"]
        return {"epochs": self.epochs}

    def save_weights(self, path):
        def kernel_bias(linear, scale=1.0):
            return scale * linear.weight.detach().numpy().T, scale * linear.bias.detach().numpy()

        weights = {}
        for i, layer in enumerate(self.encoder.hidden):
            weights[f"encoder_{i}_kernel"], weights[f"encoder_{i}_bias"] = kernel_bias(layer)
        for i, layer in enumerate(self.decoder.hidden):
            weights[f"decoder_{i}_kernel"], weights[f"decoder_{i}_bias"] = kernel_bias(layer)
        weights["loc_kernel"], weights["loc_bias"] = kernel_bias(self.encoder.embedding)
        weights["log_scale_kernel"], weights["log_scale_bias"] = kernel_bias(self.encoder.log_var, 0.5)  # log sigma
        weights["logits_kernel"], weights["logits_bias"] = kernel_bias(self.decoder.logits)
        np.savez(path, **weights)
        return {"path": path, "epochs": self.epochs}

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
