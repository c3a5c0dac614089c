"""Creates or lists a bucket of the S3-compatible server the S3 test starts.

Usage: s3_bucket.py <endpoint> create <bucket>
       s3_bucket.py <endpoint> list <bucket>   (prints the keys, one per line)
       s3_bucket.py <endpoint> upload <bucket> <directory> <prefix>
         (every file under the directory, at prefix/<its relative path>)
"""

import os
import sys

import boto3

endpoint, command, bucket = sys.argv[1:4]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
)
if command == "create":
    s3.create_bucket(Bucket=bucket)
elif command == "upload":
    directory, prefix = sys.argv[4:6]
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            key = prefix.rstrip("/") + "/" + os.path.relpath(path, directory)
            s3.upload_file(path, bucket, key)
else:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            print(item["Key"])
