# Two commands matter: `make run` (the bridge on 127.0.0.1:8000) and `make test` (every test).
# Both create the virtualenv from requirements-dev.txt first, when it is missing or out of date.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test venv clean package rehearse deploy deploy-check

# AWS package and deployment (README, "Deploying to AWS").
STAGE       ?= dev
PACKAGE_DIR ?= build/package
STACK_NAME  ?= fullwhere-bridge
S3_BUCKET   ?=
S3_PREFIX   ?= fullwhere-bridge
PARAMETERS  ?=
AWS         ?= aws
CFN_LINT    ?= $(BIN)/cfn-lint

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The whole bridge on 127.0.0.1 until Ctrl-C (sandbox/local_stack.py); e.g. make run ARGS="--pull-every 10".
run: venv
	$(BIN)/python -m sandbox.local_stack --port $(PORT) $(ARGS)

test: venv
	$(BIN)/python -m pytest -q -n 2

# chalice package (CloudFormation/SAM) merged with deploy/resources.yaml, then .pyc for the runtime's
# Python in both zips (the layer: bytecode only, trimmed; docs/performance.md, "How the package is built").
# First it refuses a retry worker timeout too short for one attempt (deploy/check_timeouts.py).
# Needs no AWS account; any region will do (the template uses ${AWS::Region}).
package: venv
	$(BIN)/python deploy/check_timeouts.py --stage $(STAGE)
	rm -f $(PACKAGE_DIR)/sam.yaml $(PACKAGE_DIR)/packaged.yaml $(PACKAGE_DIR)/*.zip
	AWS_DEFAULT_REGION="$${AWS_DEFAULT_REGION:-$${AWS_REGION:-us-east-1}}" \
	  $(BIN)/chalice package --stage $(STAGE) --template-format yaml \
	  --merge-template deploy/resources.yaml $(PACKAGE_DIR)
	$(BIN)/python deploy/precompile.py $(PACKAGE_DIR)
	$(CFN_LINT) $(PACKAGE_DIR)/sam.yaml

# The package as a deployment: its stack created on moto's CloudFormation, its handlers run from its
# own zips with the environment and roles the stack gives them (docs/operations.md, "Rehearsing a
# deployment"). Needs no AWS account; PARAMETERS as for make deploy.
rehearse: package
	$(BIN)/python -m deploy.rehearse --package-dir $(PACKAGE_DIR) $(if $(strip $(PARAMETERS)),--parameters $(PARAMETERS))

# Uploads the zips to S3_BUCKET and creates or updates the stack STACK_NAME with the AWS CLI, e.g.
#   make deploy S3_BUCKET=my-artifacts PARAMETERS="SecretsId=fullwhere-bridge AlarmEmail=ops@example.com"
# (template parameters: deploy/resources.yaml; those not given keep their current value).
deploy: deploy-check
	$(MAKE) --no-print-directory package
	$(AWS) cloudformation package --template-file $(PACKAGE_DIR)/sam.yaml \
	  --s3-bucket $(S3_BUCKET) --s3-prefix $(S3_PREFIX) --output-template-file $(PACKAGE_DIR)/packaged.yaml
	$(AWS) cloudformation deploy --template-file $(PACKAGE_DIR)/packaged.yaml --stack-name $(STACK_NAME) \
	  --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --no-fail-on-empty-changeset \
	  $(if $(strip $(PARAMETERS)),--parameter-overrides $(PARAMETERS))
	$(AWS) cloudformation describe-stacks --stack-name $(STACK_NAME) --query "Stacks[0].Outputs" --output table

deploy-check:
	@command -v $(AWS) >/dev/null 2>&1 && $(AWS) --version >/dev/null 2>&1 || { \
	  echo "make deploy: the AWS CLI ('$(AWS)') is not installed or does not run." >&2; \
	  echo "  Install it (https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html)," >&2; \
	  echo "  configure credentials and a region (aws configure), then run make deploy again." >&2; \
	  echo "  make package builds the same package without it (in $(PACKAGE_DIR))." >&2; \
	  exit 1; }
	@test -n "$(S3_BUCKET)" || { \
	  echo "make deploy: set S3_BUCKET=<an S3 bucket in the stack's region>: aws cloudformation package uploads the zips there." >&2; \
	  exit 1; }

clean:
	rm -rf $(VENV) .pytest_cache .chalice/deployments build
