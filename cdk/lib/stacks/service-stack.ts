import { Aws, CfnOutput, Duration, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as acm from 'aws-cdk-lib/aws-certificatemanager';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { Construct } from 'constructs';
import { FleetTaskDefinition, QueueWorker } from '../constructs/compute';
import { Monitoring } from '../constructs/monitoring';
import { Schedules } from '../constructs/schedules';
import { FLEET_CONTRACT, type StageSettings } from '../settings';
import { uploadsBucketName, uploadsObjectsArn, uploadsObjectsNagFinding } from '../constructs/storage';
import type { DataStack } from './data-stack';

/** One image per binary; all three come from docker/Dockerfile. */
export interface FleetImages {
  readonly apiLite: ecs.ContainerImage;
  readonly workerFiles: ecs.ContainerImage;
  readonly workerAgent: ecs.ContainerImage;
}

export interface ServiceStackProps extends StackProps {
  readonly settings: StageSettings;
  readonly data: DataStack;
  readonly images: FleetImages;
}

/**
 * The stateless half of a stage: the ECS cluster with api-lite behind an ALB,
 * the two queue workers, the migration task, schedules and monitoring.
 * Rolling back a release means redeploying this stack from an older commit.
 */
export class ServiceStack extends Stack {
  public readonly cluster: ecs.Cluster;
  public readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  public readonly api: ecs.FargateService;
  public readonly migrateTask: ecs.FargateTaskDefinition;
  public readonly workerFiles: QueueWorker;
  public readonly workerAgent: QueueWorker;
  private readonly settings: StageSettings;

  constructor(scope: Construct, id: string, props: ServiceStackProps) {
    super(scope, id, props);
    const { settings, data, images } = props;
    this.settings = settings;
    // Declared first so security group rules that span the two stacks are
    // created here, in the dependent stack, instead of making a cycle.
    this.addStackDependency(data);
    const stage = settings.stage;
    const vpc = data.vpc;
    const database = data.database;
    const fileJobs = data.fileJobs;
    const agentJobs = data.agentJobs;

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      clusterName: `glassbox-${stage}`,
      vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
      enableFargateCapacityProviders: true,
    });

    // ---- environment shared by the binaries (see the contract in docs/runbook.md)
    const databaseSecrets: Record<string, ecs.Secret> = {
      GLASSBOX_DATABASE__HOST: ecs.Secret.fromSecretsManager(database.secret, 'host'),
      GLASSBOX_DATABASE__PORT: ecs.Secret.fromSecretsManager(database.secret, 'port'),
      GLASSBOX_DATABASE__USER: ecs.Secret.fromSecretsManager(database.secret, 'username'),
      GLASSBOX_DATABASE__PASSWORD: ecs.Secret.fromSecretsManager(database.secret, 'password'),
      GLASSBOX_DATABASE__NAME: ecs.Secret.fromSecretsManager(database.secret, 'dbname'),
    };
    const commonEnvironment: Record<string, string> = {
      GLASSBOX_AWS__REGION: Aws.REGION,
      GLASSBOX_STORAGE__BUCKET: uploadsBucketName(settings),
      GLASSBOX_TELEMETRY__FORMAT: 'json',
      GLASSBOX_QUEUES__FILE_JOBS: fileJobs.queue.queueUrl,
      GLASSBOX_QUEUES__AGENT_JOBS: agentJobs.queue.queueUrl,
      RUST_LOG: 'info',
    };
    const embeddingEnvironment: Record<string, string> =
      settings.embedding.provider === 'local'
        ? { GLASSBOX_EMBEDDING__PROVIDER: 'local', GLASSBOX_EMBEDDING__MODEL_DIR: FLEET_CONTRACT.modelDir }
        : {
            GLASSBOX_EMBEDDING__PROVIDER: 'openai',
            ...(settings.embedding.baseUrl ? { GLASSBOX_EMBEDDING__BASE_URL: settings.embedding.baseUrl } : {}),
            ...(settings.embedding.model ? { GLASSBOX_EMBEDDING__MODEL: settings.embedding.model } : {}),
            ...(settings.embedding.dimensions
              ? { GLASSBOX_EMBEDDING__DIMENSIONS: String(settings.embedding.dimensions) }
              : {}),
          };
    const embeddingSecrets: Record<string, ecs.Secret> =
      settings.embedding.provider === 'openai'
        ? { GLASSBOX_EMBEDDING__API_KEY: ecs.Secret.fromSecretsManager(data.secrets.embeddingApiKey) }
        : {};
    const metricsListen = `0.0.0.0:${FLEET_CONTRACT.metricsPort}`;

    // ---- api-lite behind an ALB
    const albSecurityGroup = new ec2.SecurityGroup(this, 'AlbSecurityGroup', {
      vpc,
      description: `GlassBox ${stage}: public load balancer`,
      allowAllOutbound: false,
    });
    const listenPort = settings.api.certificateArn ? 443 : 80;
    albSecurityGroup.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(listenPort), 'API clients');
    if (settings.api.certificateArn) {
      albSecurityGroup.addIngressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(80), 'Redirect to HTTPS');
    }
    Validations.of(albSecurityGroup).acknowledge({
      id: 'AwsSolutions-EC23',
      reason: 'The API is public by design; the ALB is the only internet-facing resource and forwards to api-lite alone.',
    });

    const apiSecurityGroup = new ec2.SecurityGroup(this, 'ApiSecurityGroup', {
      vpc,
      description: `GlassBox ${stage}: api-lite tasks`,
      allowAllOutbound: true,
    });
    apiSecurityGroup.addIngressRule(albSecurityGroup, ec2.Port.tcp(FLEET_CONTRACT.apiPort), 'HTTP from the ALB');
    database.allowClient(this, 'DatabaseFromApi', apiSecurityGroup, 'PostgreSQL from api-lite');
    albSecurityGroup.addEgressRule(apiSecurityGroup, ec2.Port.tcp(FLEET_CONTRACT.apiPort), 'HTTP to api-lite');

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'Alb', {
      loadBalancerName: `glassbox-${stage}`,
      vpc,
      internetFacing: true,
      securityGroup: albSecurityGroup,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      dropInvalidHeaderFields: true,
      deletionProtection: settings.retainData,
      // Long enough for SSE trace streams to stay open between events.
      idleTimeout: Duration.seconds(120),
    });
    this.loadBalancer.logAccessLogs(data.storage.accessLogsBucket, `alb/${stage}`);

    const apiTask = new FleetTaskDefinition(this, 'ApiLite', {
      settings,
      name: 'api-lite',
      sizing: settings.api,
      container: {
        image: images.apiLite,
        environment: {
          ...commonEnvironment,
          ...embeddingEnvironment,
          GLASSBOX_API__LISTEN: `0.0.0.0:${FLEET_CONTRACT.apiPort}`,
          // Prometheus text on its own port, which the ALB does not forward.
          GLASSBOX_METRICS__LISTEN: metricsListen,
        },
        secrets: {
          ...databaseSecrets,
          ...embeddingSecrets,
          GLASSBOX_AUTH__JWT_SECRET: ecs.Secret.fromSecretsManager(data.secrets.jwt),
        },
      },
      command: ['serve'],
      port: FLEET_CONTRACT.apiPort,
      stopTimeout: Duration.seconds(FLEET_CONTRACT.apiStopTimeoutSeconds),
      health: 'api',
    });

    this.api = new ecs.FargateService(this, 'ApiLiteService', {
      serviceName: `glassbox-${stage}-api-lite`,
      cluster: this.cluster,
      taskDefinition: apiTask.taskDefinition,
      securityGroups: [apiSecurityGroup],
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      assignPublicIp: false,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { enable: true, rollback: true },
      healthCheckGracePeriod: Duration.seconds(60),
      enableECSManagedTags: true,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
    });

    const targetGroup = new elbv2.ApplicationTargetGroup(this, 'ApiTargets', {
      vpc,
      port: FLEET_CONTRACT.apiPort,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targetType: elbv2.TargetType.IP,
      targets: [this.api],
      // Liveness, not readiness: a database blip must not make ECS replace every API task.
      healthCheck: {
        path: '/health',
        healthyHttpCodes: '200',
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 3,
      },
      deregistrationDelay: Duration.seconds(FLEET_CONTRACT.apiStopTimeoutSeconds),
    });

    if (settings.api.certificateArn) {
      this.loadBalancer.addListener('Https', {
        port: 443,
        protocol: elbv2.ApplicationProtocol.HTTPS,
        certificates: [acm.Certificate.fromCertificateArn(this, 'Certificate', settings.api.certificateArn)],
        sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
        defaultTargetGroups: [targetGroup],
        open: false,
      });
      this.loadBalancer.addRedirect({ sourcePort: 80, targetPort: 443, open: false });
    } else {
      this.loadBalancer.addListener('Http', {
        port: 80,
        protocol: elbv2.ApplicationProtocol.HTTP,
        defaultTargetGroups: [targetGroup],
        open: false,
      });
    }

    const apiScaling = this.api.autoScaleTaskCount({
      minCapacity: settings.api.minTasks,
      maxCapacity: settings.api.maxTasks,
    });
    apiScaling.scaleOnCpuUtilization('Cpu', {
      targetUtilizationPercent: 60,
      scaleInCooldown: Duration.minutes(5),
      scaleOutCooldown: Duration.minutes(1),
    });

    // api-lite sends to both queues, redrives the DLQs and presigns uploads.
    const apiRole = apiTask.taskDefinition.taskRole;
    fileJobs.queue.grantSendMessages(apiRole);
    agentJobs.queue.grantSendMessages(apiRole);
    for (const jobQueue of [fileJobs, agentJobs]) {
      jobQueue.deadLetterQueue.grantConsumeMessages(apiRole);
      jobQueue.deadLetterQueue.grantSendMessages(apiRole);
      jobQueue.queue.grant(apiRole, 'sqs:GetQueueAttributes');
    }
    apiRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'RedriveDeadLetterQueues',
        actions: ['sqs:StartMessageMoveTask', 'sqs:ListMessageMoveTasks', 'sqs:CancelMessageMoveTask'],
        resources: [fileJobs.deadLetterQueue.queueArn, agentJobs.deadLetterQueue.queueArn],
      }),
    );
    apiRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'Uploads',
        actions: ['s3:PutObject', 's3:GetObject', 's3:DeleteObject'],
        resources: [uploadsObjectsArn(settings)],
      }),
    );
    Validations.of(apiRole).acknowledge({
      id: uploadsObjectsNagFinding(settings),
      reason: 'Uploads are keyed by org and file id, unknown at deploy time; the role is limited to object actions in this one bucket.',
    });

    // ---- the migration as a one-off task (api-lite migrate)
    const migrate = new FleetTaskDefinition(this, 'Migrate', {
      settings,
      name: 'migrate',
      sizing: { cpu: 256, memoryMiB: 512 },
      container: {
        image: images.apiLite,
        environment: { ...commonEnvironment },
        secrets: { ...databaseSecrets },
      },
      command: ['migrate'],
      port: FLEET_CONTRACT.apiPort,
      stopTimeout: Duration.seconds(FLEET_CONTRACT.apiStopTimeoutSeconds),
    });
    this.migrateTask = migrate.taskDefinition;
    const migrateSecurityGroup = this.taskSecurityGroup('MigrateSecurityGroup', 'one-off migration task');
    database.allowClient(this, 'DatabaseFromMigrate', migrateSecurityGroup, 'PostgreSQL from the migration task');

    // ---- workers
    const workerFilesSecurityGroup = this.taskSecurityGroup('WorkerFilesSecurityGroup', 'worker-files tasks');
    database.allowClient(this, 'DatabaseFromWorkerFiles', workerFilesSecurityGroup, 'PostgreSQL from worker-files');
    this.workerFiles = new QueueWorker(this, 'WorkerFiles', {
      settings,
      cluster: this.cluster,
      name: 'worker-files',
      sizing: settings.workerFiles,
      jobQueue: fileJobs,
      securityGroups: [workerFilesSecurityGroup],
      container: {
        image: images.workerFiles,
        environment: {
          ...commonEnvironment,
          ...embeddingEnvironment,
          GLASSBOX_METRICS__LISTEN: metricsListen,
        },
        secrets: { ...databaseSecrets, ...embeddingSecrets },
      },
    });
    fileJobs.queue.grantConsumeMessages(this.workerFiles.taskDefinition.taskRole);
    this.workerFiles.taskDefinition.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadUploads',
        actions: ['s3:GetObject'],
        resources: [uploadsObjectsArn(settings)],
      }),
    );
    Validations.of(this.workerFiles.taskDefinition.taskRole).acknowledge({
      id: uploadsObjectsNagFinding(settings),
      reason: 'worker-files reads whichever upload a job names; the role may only GetObject in this one bucket.',
    });

    const workerAgentSecurityGroup = this.taskSecurityGroup('WorkerAgentSecurityGroup', 'worker-agent tasks');
    database.allowClient(this, 'DatabaseFromWorkerAgent', workerAgentSecurityGroup, 'PostgreSQL from worker-agent');
    this.workerAgent = new QueueWorker(this, 'WorkerAgent', {
      settings,
      cluster: this.cluster,
      name: 'worker-agent',
      sizing: settings.workerAgent,
      jobQueue: agentJobs,
      securityGroups: [workerAgentSecurityGroup],
      container: {
        image: images.workerAgent,
        environment: {
          ...commonEnvironment,
          GLASSBOX_METRICS__LISTEN: metricsListen,
          GLASSBOX_LLM__BASE_URL: settings.llm.baseUrl,
        },
        secrets: {
          ...databaseSecrets,
          GLASSBOX_LLM__API_KEY: ecs.Secret.fromSecretsManager(data.secrets.llmApiKey),
        },
      },
    });
    agentJobs.queue.grantConsumeMessages(this.workerAgent.taskDefinition.taskRole);

    // ---- schedules and monitoring
    new Schedules(this, 'Schedules', {
      settings,
      queues: { 'file-jobs': fileJobs.queue, 'agent-jobs': agentJobs.queue },
      deadLetterQueue: data.schedulesDeadLetterQueue,
    });

    new Monitoring(this, 'Monitoring', {
      settings,
      queues: [
        { name: 'file-jobs', queue: fileJobs.queue, deadLetterQueue: fileJobs.deadLetterQueue },
        { name: 'agent-jobs', queue: agentJobs.queue, deadLetterQueue: agentJobs.deadLetterQueue },
        { name: 'schedules', deadLetterQueue: data.schedulesDeadLetterQueue },
      ],
      loadBalancer: this.loadBalancer,
      services: {
        'api-lite': this.api,
        'worker-files': this.workerFiles.service,
        'worker-agent': this.workerAgent.service,
      },
      database: database.instance,
      workerLogGroups: {
        'worker-files': this.workerFiles.logGroup,
        'worker-agent': this.workerAgent.logGroup,
      },
    });

    // ---- outputs the runbook refers to
    new CfnOutput(this, 'ApiUrl', {
      value: `${settings.api.certificateArn ? 'https' : 'http'}://${this.loadBalancer.loadBalancerDnsName}`,
    });
    new CfnOutput(this, 'ClusterName', { value: this.cluster.clusterName });
    new CfnOutput(this, 'MigrateTaskDefinitionArn', { value: this.migrateTask.taskDefinitionArn });
    new CfnOutput(this, 'MigrateSecurityGroupId', {
      description: 'Security group for one-off tasks (api-lite migrate); subnets are the Data stack output AppSubnetIds.',
      value: migrateSecurityGroup.securityGroupId,
    });
  }

  /** A security group for tasks that only make outbound calls (no ingress). */
  private taskSecurityGroup(id: string, what: string): ec2.SecurityGroup {
    return new ec2.SecurityGroup(this, id, {
      vpc: this.cluster.vpc,
      description: `GlassBox ${this.settings.stage}: ${what}`,
      allowAllOutbound: true,
    });
  }
}
