"""The reference experiment's plain loop, for checking a run file by hand.

    python3 tools/article_loop.py --optimizer adam --loss mse --seed 0

prints what the pipeline writes to results/runs/linear/{loss}/{optimizer}/base/seed{seed}.tsv
for the default config: the header and one line per step (step, loss as ``repr``,
1 evaluation). It sets nothing: run it with the portable mode's environment
(docs/reproducibility.md) to compare with a portable run, or without it on the
same machine to compare with a ``numerics: native`` run, e.g.

    diff <(python3 tools/article_loop.py --optimizer adam --loss mse --seed 0) \\
         results/runs/linear/mse/adam/base/seed0.tsv

It uses only torch, no code of the pipeline.
"""

import argparse

import torch

OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.1}),
    "momentum_sgd": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-9}),
    "rmsprop": (torch.optim.RMSprop, {}),
}
LOSSES = {"mse": torch.nn.MSELoss, "l1": torch.nn.L1Loss}


def losses(optimizer: str, loss: str, seed: int, steps: int = 40) -> list[float]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(20, 20, bias=False)
    x = torch.randn(1, 20)
    w = torch.randn(1, 1)
    y = w * x + 2
    cls, kwargs = OPTIMIZERS[optimizer]
    step_optimizer = cls(model.parameters(), **kwargs)
    criterion = LOSSES[loss]()
    recorded = []
    for _ in range(steps):
        step_optimizer.zero_grad()
        value = criterion(model(x), y)
        value.backward()
        step_optimizer.step()
        recorded.append(value.item())
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=OPTIMIZERS, required=True)
    parser.add_argument("--loss", choices=LOSSES, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    # The learning rate each step used: the optimizer's, constant (no schedule).
    cls, kwargs = OPTIMIZERS[args.optimizer]
    lr = kwargs.get("lr", cls([torch.zeros(1)]).defaults["lr"])
    print("step\tloss\tevaluations\tlr")
    for step, value in enumerate(losses(args.optimizer, args.loss, args.seed, args.steps)):
        print(f"{step}\t{value!r}\t1\t{lr!r}")


if __name__ == "__main__":
    main()
