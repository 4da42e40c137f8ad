# Two entry points for a fresh Debian machine (Python 3.11, root, no GPU):
#   make demo   — set everything up, then run the main job (the benchmark on the embedded default task)
#   make test   — set everything up, then run the test suite (make lint: ruff over the tree)
# Both install into .venv/ only what is missing, so repeated runs start at once.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
DEMO_OUT ?= outputs/demo

TORCH_PIN := requirements/torch.txt

.PHONY: setup demo test test-conformance lint dataset browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, from the one pin file (requirements/torch.txt, which pyproject.toml reads too): the build this
# machine kind carries on disk (a newer one downloads gigabytes). Then the package with every extra and the
# test tools (the "test" extra).
$(STAMP): $(PY) pyproject.toml $(TORCH_PIN) requirements/core.txt
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r $(TORCH_PIN)
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

# The Fashion-MNIST IDX files of the embedded default task (Debian package; needs root).
dataset:
	@if [ ! -f $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	  else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set FASHION_MNIST_DIR"; fi; \
	fi

# Chromium for the report's browser test (Debian package, driven by Playwright; never `playwright install`).
browser:
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -qq chromium || (apt-get update -qq && apt-get install -y -qq chromium)); \
	  else echo "Chromium not found: run 'sudo apt-get install chromium' (the report's browser test needs it)"; fi; \
	fi

setup: $(STAMP) dataset browser

# The agents of the README's tables: baselines, the null models (copies of paper-ppo's looks), the shipped
# policies, and the three shipped paper-ppo-stop policies (one per step cost) that decide when to stop.
WEIGHTS := gfnet_env/weights
STOPPERS := c5e-9 c7e-9 c1e-8
DEMO_AGENTS := random,saliency,saliency-ior,shuffle,prior,oracle,paper-ppo,sb3-ppo,paper-ppo-stop:c5e-9,paper-ppo-stop:c7e-9,paper-ppo-stop:c1e-8
DEMO_DIRS := $(foreach c,$(STOPPERS),--agent-dir paper-ppo-stop:$(c)=$(WEIGHTS)/paper_ppo_stop_$(c)_cluttered_fmnist.pt)

demo: setup
	$(VENV)/bin/gfnet benchmark --env GFNet-ClutteredFashionMNIST-v0 --agents $(DEMO_AGENTS) $(DEMO_DIRS) \
	  --episodes 10000 --seeds 3 --fit-episodes 5000 --batch-size 250 --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q

# ruff with the rules of pyproject.toml's [tool.ruff] (CI runs it before the tests)
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-conformance: setup
	$(PY) -m pytest -q -k conformance

clean:
	rm -rf $(VENV) outputs .pytest_cache
