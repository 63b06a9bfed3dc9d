# make demo  : install the stack (once), generate the demo data, train + evaluate a classifier
# make test  : install the stack (once) and run the test suite
# make env   : only install; prints the environment's path
# STACK=onedl: the same on the maintained fork of the OpenMMLab stack (torch 2.14)
# PYTEST_ARGS: what `make test` passes to pytest (default: the whole suite)
# make test-onedl: the subset CI runs on the fork stack
STACK ?= upstream
ENV_DIR := $(shell bash tools/setup_env.sh --print-path --stack $(STACK))
PY := $(ENV_DIR)/bin/python
DEMO_CFG := configs/demo/rmt-nano_1xb32_demo-cls.py
DEMO_WORK := work_dirs/demo-cls
PYTEST_ARGS ?= tests

# the four families, configs, checkpoints, the end-to-end runs of the three tasks
ONEDL_TESTS := tests/test_models/test_backbones tests/test_configs.py tests/test_checkpoints.py \
	tests/test_end_to_end.py

.PHONY: env demo test test-onedl

env:
	bash tools/setup_env.sh --stack $(STACK)

demo: env
	$(PY) tools/generate_demo_data.py --out data/demo
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CFG) "$$(cat $(DEMO_WORK)/last_checkpoint)" --work-dir $(DEMO_WORK)

test: env
	$(PY) -m pytest $(PYTEST_ARGS) -q --durations=20

test-onedl:
	$(MAKE) test STACK=onedl PYTEST_ARGS="$(ONEDL_TESTS)"
