"""Create the local AWS resources in moto, the way the CDK app creates them on AWS.

Run by the `moto-init` service of docker/compose.yaml (inside the moto image,
which ships boto3). Idempotent: run it as often as you like.

- the upload bucket, with CORS for presigned PUT and an abort rule for
  incomplete multipart uploads;
- file-jobs and agent-jobs, each with its own DLQ: maxReceiveCount 5,
  visibility 120 s, retention 4 days (DLQ 14 days), 16 KiB messages, and a
  redrive allow policy naming the source queue.
"""

import json
import os
import sys

import boto3
from botocore.exceptions import ClientError

ENDPOINT = os.environ.get("MOTO_ENDPOINT", "http://moto:5000")
REGION = os.environ.get("AWS_REGION", "us-east-1")
BUCKET = os.environ.get("GLASSBOX_STORAGE__BUCKET", "glassbox-files")
QUEUES = [
    os.environ.get("GLASSBOX_QUEUES__FILE_JOBS", "glassbox-file-jobs"),
    os.environ.get("GLASSBOX_QUEUES__AGENT_JOBS", "glassbox-agent-jobs"),
]
CORS_ORIGINS = os.environ.get("GLASSBOX_CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000").split(",")

# Kept equal to FLEET_CONTRACT in cdk/lib/settings.ts.
MAX_RECEIVE_COUNT = 5
VISIBILITY_TIMEOUT_SECONDS = 120
SOURCE_RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
MAX_MESSAGE_SIZE_BYTES = 16 * 1024


def client(service):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )


def create_bucket(s3):
    try:
        if REGION == "us-east-1":
            s3.create_bucket(Bucket=BUCKET)
        else:
            s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        print(f"bucket {BUCKET}: created")
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        print(f"bucket {BUCKET}: exists")
    s3.put_bucket_cors(
        Bucket=BUCKET,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedMethods": ["PUT"],
                    "AllowedOrigins": CORS_ORIGINS,
                    "AllowedHeaders": ["content-type", "content-md5", "x-amz-*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )
    s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-incomplete-multipart-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ]
        },
    )


def queue_arn(sqs, url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def create_job_queue(sqs, name):
    # Create without attributes, then set them: create_queue fails when an
    # existing queue has different attributes, set_queue_attributes does not.
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    source_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    dlq_arn = queue_arn(sqs, dlq_url)
    source_arn = queue_arn(sqs, source_url)

    sqs.set_queue_attributes(
        QueueUrl=dlq_url,
        Attributes={
            "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
            "MaximumMessageSize": str(MAX_MESSAGE_SIZE_BYTES),
            "RedriveAllowPolicy": json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [source_arn]}),
        },
    )
    sqs.set_queue_attributes(
        QueueUrl=source_url,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
            "MessageRetentionPeriod": str(SOURCE_RETENTION_SECONDS),
            "MaximumMessageSize": str(MAX_MESSAGE_SIZE_BYTES),
            "ReceiveMessageWaitTimeSeconds": "20",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        },
    )
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"]
    )
    if redrive["deadLetterTargetArn"] != dlq_arn or int(redrive["maxReceiveCount"]) != MAX_RECEIVE_COUNT:
        raise RuntimeError(f"queue {name}: redrive policy did not stick: {redrive}")
    print(f"queue {name}: ready, dead letters go to {name}-dlq after {MAX_RECEIVE_COUNT} receives")


def main():
    create_bucket(client("s3"))
    sqs = client("sqs")
    for name in QUEUES:
        create_job_queue(sqs, name)
    print("moto-init: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
