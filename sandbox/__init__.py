"""The local sandbox: real HTTP emulators of the Fullwhere partner API and of every platform API the bridge
calls, moto's server as SQS and DynamoDB, and a poller standing in for Lambda's SQS event source mapping.

The tests run the bridge against it; ``make run`` runs it as the local stack. None of it is deployed.
"""
