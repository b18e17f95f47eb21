import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import { Construct } from 'constructs';
import { FLEET_CONTRACT, type StageSettings } from '../settings';

export interface DatabaseProps {
  readonly settings: StageSettings;
  readonly vpc: ec2.IVpc;
}

/**
 * PostgreSQL on RDS with pgvector available (`CREATE EXTENSION vector` runs in
 * our migrations, so nothing here installs it).
 *
 * The minor version is pinned and automatic minor upgrades are off, so the
 * engine only changes through a reviewed change to this file.
 */
export class Database extends Construct {
  /** PostgreSQL 17.9 ships pgvector 0.8 on RDS. */
  public static readonly ENGINE_VERSION = rds.PostgresEngineVersion.VER_17_9;

  public readonly instance: rds.DatabaseInstance;
  /** JSON secret with host, port, username, password and dbname. */
  public readonly secret: rds.DatabaseSecret;
  /**
   * The instance's security group. Clients are allowed in with
   * `allowClient`, which puts the rule in the caller's stack.
   */
  public readonly serverSecurityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: DatabaseProps) {
    super(scope, id);
    const { settings, vpc } = props;
    const stage = settings.stage;

    this.secret = new rds.DatabaseSecret(this, 'Credentials', {
      secretName: `glassbox/${stage}/database`,
      username: FLEET_CONTRACT.databaseUser,
      dbname: FLEET_CONTRACT.databaseName,
    });
    Validations.of(this.secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        'ECS injects the password at task start, so a scheduled single-user rotation would break new connections of running tasks; ' +
        'rotation is an operator procedure (docs/runbook.md, "Rotate secrets") followed by a forced redeploy.',
    });

    this.serverSecurityGroup = new ec2.SecurityGroup(this, 'ServerSecurityGroup', {
      vpc,
      description: `GlassBox ${stage}: PostgreSQL`,
      allowAllOutbound: false,
    });

    const parameterGroup = new rds.ParameterGroup(this, 'Parameters', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: Database.ENGINE_VERSION }),
      description: `GlassBox ${stage} PostgreSQL parameters`,
      parameters: {
        'rds.force_ssl': '1',
        log_min_duration_statement: '500',
        // A safety net against leaked transactions holding locks; no code path idles this long.
        idle_in_transaction_session_timeout: '300000',
      },
    });

    // RDS writes its logs to these groups; creating them here sets their
    // retention without the log-retention Lambda that CDK would add otherwise.
    const instanceIdentifier = `glassbox-${stage}`;
    const logGroups = ['postgresql', 'upgrade'].map(
      (kind) =>
        new logs.LogGroup(this, `Logs-${kind}`, {
          logGroupName: `/aws/rds/instance/${instanceIdentifier}/${kind}`,
          retention: settings.logRetentionDays as logs.RetentionDays,
          removalPolicy: settings.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
        }),
    );

    this.instance = new rds.DatabaseInstance(this, 'Instance', {
      instanceIdentifier,
      engine: rds.DatabaseInstanceEngine.postgres({ version: Database.ENGINE_VERSION }),
      autoMinorVersionUpgrade: false,
      instanceType: new ec2.InstanceType(settings.database.instanceType),
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      securityGroups: [this.serverSecurityGroup],
      credentials: rds.Credentials.fromSecret(this.secret),
      databaseName: FLEET_CONTRACT.databaseName,
      parameterGroup,
      port: 5432,
      multiAz: settings.database.multiAz,
      storageType: rds.StorageType.GP3,
      allocatedStorage: settings.database.allocatedStorageGiB,
      maxAllocatedStorage: settings.database.maxAllocatedStorageGiB,
      storageEncrypted: true,
      backupRetention: Duration.days(settings.database.backupRetentionDays),
      deletionProtection: settings.database.deletionProtection,
      removalPolicy: settings.retainData ? RemovalPolicy.SNAPSHOT : RemovalPolicy.DESTROY,
      deleteAutomatedBackups: !settings.retainData,
      copyTagsToSnapshot: true,
      publiclyAccessible: false,
      cloudwatchLogsExports: ['postgresql', 'upgrade'],
      enablePerformanceInsights: settings.database.performanceInsights,
      monitoringInterval: Duration.seconds(60),
      caCertificate: rds.CaCertificate.RDS_CA_RSA2048_G1,
    });

    for (const logGroup of logGroups) {
      this.instance.node.addDependency(logGroup);
    }
    Validations.of(this.instance).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole]',
      reason: 'Enhanced Monitoring requires this AWS-managed service-role policy; it only lets RDS write its own OS metrics.',
    });

    if (!settings.database.multiAz) {
      Validations.of(this.instance).acknowledge({
        id: 'AwsSolutions-RDS3',
        reason: `Single-AZ is a cost choice for the ${stage} stage; prod runs Multi-AZ (see lib/settings.ts).`,
      });
    }
    if (!settings.database.deletionProtection) {
      Validations.of(this.instance).acknowledge({
        id: 'AwsSolutions-RDS10',
        reason: `The ${stage} database is disposable; staging and prod enable deletion protection.`,
      });
    }
    Validations.of(this.instance).acknowledge({
      id: 'AwsSolutions-RDS11',
      reason:
        'The default port is kept on purpose: the instance sits in isolated subnets and only the client security group may connect, ' +
        'so a non-default port adds no protection and breaks tooling defaults.',
    });
  }

  /**
   * Lets `client` open connections to PostgreSQL. The rule is created in
   * `scope` (the client's stack), so the stateful stack never refers to the
   * stateless one.
   */
  public allowClient(scope: Construct, id: string, client: ec2.ISecurityGroup, description: string): void {
    new ec2.CfnSecurityGroupIngress(scope, id, {
      groupId: this.serverSecurityGroup.securityGroupId,
      sourceSecurityGroupId: client.securityGroupId,
      ipProtocol: 'tcp',
      fromPort: 5432,
      toPort: 5432,
      description,
    });
  }
}
