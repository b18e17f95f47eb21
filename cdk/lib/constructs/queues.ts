import { Arn, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { FLEET_CONTRACT, type StageSettings } from '../settings';

export interface JobQueueProps {
  readonly settings: StageSettings;
  /** `file-jobs` or `agent-jobs`; the SQS names are `glassbox-<stage>-<name>[-dlq]`. */
  readonly name: string;
}

/**
 * A job queue and its own dead-letter queue.
 *
 * The source queue's redrive policy names the DLQ, and the DLQ's redrive
 * allow policy names the source. CloudFormation cannot resolve that cycle with
 * references, so the source queue gets a fixed name and the DLQ refers to its
 * ARN built from that name.
 */
export class JobQueue extends Construct {
  public readonly queue: sqs.Queue;
  public readonly deadLetterQueue: sqs.Queue;
  /** The logical name (`file-jobs`), for labels and alarm names. */
  public readonly shortName: string;

  constructor(scope: Construct, id: string, props: JobQueueProps) {
    super(scope, id);
    const { settings, name } = props;
    this.shortName = name;
    const queueName = `glassbox-${settings.stage}-${name}`;
    const removalPolicy = settings.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;

    const sourceQueueArn = Arn.format({ service: 'sqs', resource: queueName }, Stack.of(this));
    const sourceQueueRef = sqs.Queue.fromQueueArn(this, 'SourceRef', sourceQueueArn);

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      queueName: `${queueName}-dlq`,
      retentionPeriod: Duration.days(FLEET_CONTRACT.dlqRetentionDays),
      maxMessageSizeBytes: FLEET_CONTRACT.maxMessageSizeBytes,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy,
      redriveAllowPolicy: {
        redrivePermission: sqs.RedrivePermission.BY_QUEUE,
        sourceQueues: [sourceQueueRef],
      },
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself a dead-letter queue.',
    });

    this.queue = new sqs.Queue(this, 'Queue', {
      queueName,
      visibilityTimeout: Duration.seconds(FLEET_CONTRACT.visibilityTimeoutSeconds),
      retentionPeriod: Duration.days(FLEET_CONTRACT.sourceRetentionDays),
      maxMessageSizeBytes: FLEET_CONTRACT.maxMessageSizeBytes,
      // Long polling by default, so a client that forgets WaitTimeSeconds still does not spin.
      receiveMessageWaitTime: Duration.seconds(20),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      removalPolicy,
      deadLetterQueue: {
        queue: this.deadLetterQueue,
        maxReceiveCount: FLEET_CONTRACT.maxReceiveCount,
      },
    });
  }
}

export interface SchedulerDeadLetterQueueProps {
  readonly settings: StageSettings;
}

/** Where EventBridge Scheduler puts messages it could not deliver after its retries. */
export function schedulerDeadLetterQueue(
  scope: Construct,
  id: string,
  props: SchedulerDeadLetterQueueProps,
): sqs.Queue {
  const queue = new sqs.Queue(scope, id, {
    queueName: `glassbox-${props.settings.stage}-schedules-dlq`,
    retentionPeriod: Duration.days(FLEET_CONTRACT.dlqRetentionDays),
    maxMessageSizeBytes: FLEET_CONTRACT.maxMessageSizeBytes,
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    removalPolicy: props.settings.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    // Nothing redrives from here through SQS: an operator re-sends by hand.
    redriveAllowPolicy: { redrivePermission: sqs.RedrivePermission.DENY_ALL },
  });
  Validations.of(queue).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: 'This queue is itself a dead-letter queue (for EventBridge Scheduler deliveries).',
  });
  return queue;
}
