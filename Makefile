# make demo  : install the stack (once), generate the demo data, train + evaluate a classifier
# make test  : install the stack (once) and run the test suite
# make env   : only install; prints the environment's path
ENV_DIR := $(shell bash tools/setup_env.sh --print-path)
PY := $(ENV_DIR)/bin/python
DEMO_CFG := configs/demo/rmt-nano_1xb32_demo-cls.py
DEMO_WORK := work_dirs/demo-cls

.PHONY: env demo test

env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/generate_demo_data.py --out data/demo
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_WORK)
	$(PY) tools/test.py $(DEMO_CFG) "$$(cat $(DEMO_WORK)/last_checkpoint)" --work-dir $(DEMO_WORK)

test: env
	$(PY) -m pytest tests -q --durations=20
