import { Aws, Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import type { StageSettings } from '../settings';

/**
 * The upload bucket's name is fixed per stage, account and region, so other
 * stacks and the runbook can name it (and IAM findings read the same on every synth).
 */
export function uploadsBucketName(settings: StageSettings): string {
  return `glassbox-${settings.stage}-uploads-${Aws.ACCOUNT_ID}-${settings.region}`;
}

/** ARN pattern of every object in the upload bucket. */
export function uploadsObjectsArn(settings: StageSettings): string {
  return `arn:${Aws.PARTITION}:s3:::${uploadsBucketName(settings)}/*`;
}

/** How cdk-nag names the wildcard finding for `uploadsObjectsArn`, to acknowledge it. */
export function uploadsObjectsNagFinding(settings: StageSettings): string {
  return `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::glassbox-${settings.stage}-uploads-<AWS::AccountId>-${settings.region}/*]`;
}

export interface StorageProps {
  readonly settings: StageSettings;
}

/**
 * The upload bucket (clients PUT to presigned URLs, worker-files reads) and an
 * access-log bucket that also receives the ALB's access logs.
 */
export class Storage extends Construct {
  public readonly bucket: s3.Bucket;
  public readonly accessLogsBucket: s3.Bucket;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    const { settings } = props;
    const removalPolicy = settings.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogs', {
      // ALB access logs only support SSE-S3.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      removalPolicy,
      lifecycleRules: [
        { id: 'expire-access-logs', expiration: Duration.days(Math.max(settings.logRetentionDays, 30)) },
        { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(1) },
      ],
    });
    Validations.of(this.accessLogsBucket).acknowledge({
      id: 'AwsSolutions-S1',
      reason: 'This is the access-log bucket itself; logging it into itself would loop.',
    });

    this.bucket = new s3.Bucket(this, 'Uploads', {
      bucketName: uploadsBucketName(settings),
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      versioned: settings.storage.versioned,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'uploads/',
      removalPolicy,
      cors: [
        {
          // Browsers upload straight to S3 with a presigned PUT; the signed
          // Content-Type must be sent, and the ETag read back.
          allowedMethods: [s3.HttpMethods.PUT],
          allowedOrigins: [...settings.storage.corsAllowedOrigins],
          allowedHeaders: ['content-type', 'content-md5', 'x-amz-*'],
          exposedHeaders: ['ETag'],
          maxAge: 3600,
        },
      ],
      lifecycleRules: [
        {
          id: 'abort-incomplete-multipart-uploads',
          abortIncompleteMultipartUploadAfter: Duration.days(settings.storage.abortIncompleteUploadAfterDays),
        },
        ...(settings.storage.versioned
          ? [{ id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(30) }]
          : []),
      ],
    });
  }
}
