"""Creates an IAM user with full S3 access on a fresh moto server, then the bucket; prints an env file."""
import json
import sys

import boto3

endpoint = sys.argv[1]


def client(service, key="bootstrap", secret="bootstrap"):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret)


iam = client("iam")
iam.create_user(UserName="phrasesweep")
key = iam.create_access_key(UserName="phrasesweep")["AccessKey"]
iam.put_user_policy(UserName="phrasesweep", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
client("s3", key["AccessKeyId"], key["SecretAccessKey"]).create_bucket(Bucket="phrasesweep")
print(f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}")
print(f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}")
print("AWS_REGION=us-east-1")
print(f"AWS_ENDPOINT_URL={endpoint}")
print("AWS_ALLOW_HTTP=true")
