"""``make rehearse``: the packaged stack created on moto's CloudFormation and run from its own zips.

``python -m deploy.rehearse`` (after ``make package``) translates ``build/package/sam.yaml`` with
aws-sam-translator, creates it on a moto server (leaving out, by name and with the reason, what moto cannot
create), then runs the functions' handlers from ``deployment.zip`` and the layer, each in a fresh
process, with the environment and the role the stack gave it, against the sandbox's Fullwhere and
platform emulators: a guest imported, a failure queued and imported by the worker, a permanent failure
dead-lettered, the OPERA Cloud pull, the identity ledger in the stack's table; and every AWS call checked
against the role's policies. docs/operations.md, "Rehearsing a deployment".

- ``stack.py``: upload, translate, leave out, create; CloudFormation's intrinsics resolved against the stack;
- ``runtime.py`` and ``bootstrap.py``: Lambda's execution environment and its SQS event source mapping;
- ``iam.py``: the calls against the policies;
- ``scenario.py``: the steps and what each must show.
"""
