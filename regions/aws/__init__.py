"""The only code that talks to AWS (boto3): ``session`` (clients, retries, endpoint override, assumed
roles, ``AwsError``) and one module per service. Plain values in, plain values or dataclasses out;
every public function raises only ``AwsError``."""
