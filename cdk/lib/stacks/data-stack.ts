import { CfnOutput, Fn, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { Database } from '../constructs/database';
import { Network } from '../constructs/network';
import { JobQueue, schedulerDeadLetterQueue } from '../constructs/queues';
import { Storage } from '../constructs/storage';
import type { StageSettings } from '../settings';

export interface DataStackProps extends StackProps {
  readonly settings: StageSettings;
}

/** Application secrets that are not database credentials. */
export interface AppSecrets {
  /** Signs and verifies API tokens (api-lite only). */
  readonly jwt: secretsmanager.ISecret;
  /** Key for the OpenAI-compatible chat endpoint (worker-agent). */
  readonly llmApiKey: secretsmanager.ISecret;
  /** Key for a remote embedding endpoint, when the provider is `openai`. */
  readonly embeddingApiKey: secretsmanager.ISecret;
}

/**
 * The stateful half of a stage: network, database, bucket, queues, secrets.
 * It changes rarely and is never rolled back by redeploying an old image.
 */
export class DataStack extends Stack {
  public readonly vpc: ec2.IVpc;
  public readonly database: Database;
  public readonly storage: Storage;
  public readonly fileJobs: JobQueue;
  public readonly agentJobs: JobQueue;
  public readonly schedulesDeadLetterQueue: sqs.Queue;
  public readonly secrets: AppSecrets;

  constructor(scope: Construct, id: string, props: DataStackProps) {
    super(scope, id, props);
    const { settings } = props;
    const stage = settings.stage;

    this.vpc = new Network(this, 'Network', { settings }).vpc;
    this.database = new Database(this, 'Database', { settings, vpc: this.vpc });
    this.storage = new Storage(this, 'Storage', { settings });
    this.fileJobs = new JobQueue(this, 'FileJobs', { settings, name: 'file-jobs' });
    this.agentJobs = new JobQueue(this, 'AgentJobs', { settings, name: 'agent-jobs' });
    this.schedulesDeadLetterQueue = schedulerDeadLetterQueue(this, 'SchedulesDeadLetterQueue', { settings });

    const jwt = new secretsmanager.Secret(this, 'JwtSecret', {
      secretName: `glassbox/${stage}/jwt`,
      description: 'HMAC key for api-lite tokens (GLASSBOX_AUTH__JWT_SECRET)',
      generateSecretString: { passwordLength: 64, excludePunctuation: true },
    });
    const llmApiKey = new secretsmanager.Secret(this, 'LlmApiKey', {
      secretName: `glassbox/${stage}/llm-api-key`,
      description: 'API key of the LLM endpoint (GLASSBOX_LLM__API_KEY); set the real value with put-secret-value',
    });
    const embeddingApiKey = new secretsmanager.Secret(this, 'EmbeddingApiKey', {
      secretName: `glassbox/${stage}/embedding-api-key`,
      description: 'API key of a remote embedding endpoint (GLASSBOX_EMBEDDING__API_KEY); unused with the local model',
    });
    for (const secret of [jwt, llmApiKey, embeddingApiKey]) {
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'Third-party API keys cannot be rotated by a Lambda we own, and the JWT key is rotated by the runbook procedure ' +
          '(new value, then a forced redeploy) because ECS injects secrets only at task start.',
      });
    }
    this.secrets = { jwt, llmApiKey, embeddingApiKey };

    new CfnOutput(this, 'AppSubnetIds', {
      description: 'Private subnets of the tasks, comma separated (for aws ecs run-task).',
      value: Fn.join(',', this.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnetIds),
    });
    new CfnOutput(this, 'BucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'FileJobsQueueUrl', { value: this.fileJobs.queue.queueUrl });
    new CfnOutput(this, 'FileJobsDlqUrl', { value: this.fileJobs.deadLetterQueue.queueUrl });
    new CfnOutput(this, 'AgentJobsQueueUrl', { value: this.agentJobs.queue.queueUrl });
    new CfnOutput(this, 'AgentJobsDlqUrl', { value: this.agentJobs.deadLetterQueue.queueUrl });
    new CfnOutput(this, 'SchedulesDlqUrl', { value: this.schedulesDeadLetterQueue.queueUrl });
    new CfnOutput(this, 'DatabaseSecretArn', { value: this.database.secret.secretArn });
    new CfnOutput(this, 'DatabaseEndpoint', { value: this.database.instance.dbInstanceEndpointAddress });
  }
}
