import { Match } from 'aws-cdk-lib/assertions';
import { Database } from '../lib/constructs/database';
import { FLEET_CONTRACT } from '../lib/settings';
import { type StageTemplates, buildTestApp, removeTestOutput, resourcesOf, templatesOf } from './helpers';

afterAll(removeTestOutput);

const { stages } = buildTestApp();
const dev: StageTemplates = templatesOf(stages.dev);
const prod: StageTemplates = templatesOf(stages.prod);

describe('network', () => {
  test('a VPC with public, private-with-egress and isolated subnets, and flow logs', () => {
    dev.data.resourceCountIs('AWS::EC2::VPC', 1);
    dev.data.resourceCountIs('AWS::EC2::FlowLog', 1);
    dev.data.resourceCountIs('AWS::EC2::Subnet', 6);
    prod.data.resourceCountIs('AWS::EC2::Subnet', 9);
    dev.data.resourceCountIs('AWS::EC2::NatGateway', 1);
    dev.data.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway' });
  });
});

describe('database', () => {
  test('PostgreSQL with a pinned minor version, encrypted, never auto-upgraded', () => {
    const expectedVersion = Database.ENGINE_VERSION.postgresFullVersion;
    expect(expectedVersion).toMatch(/^\d+\.\d+$/);
    dev.data.hasResourceProperties('AWS::RDS::DBInstance', {
      Engine: 'postgres',
      EngineVersion: expectedVersion,
      StorageEncrypted: true,
      AutoMinorVersionUpgrade: false,
      PubliclyAccessible: false,
      DBName: FLEET_CONTRACT.databaseName,
    });
  });

  test('credentials live in Secrets Manager with host, port, username, password, dbname', () => {
    dev.data.hasResourceProperties('AWS::SecretsManager::Secret', {
      Name: 'glassbox/dev/database',
      GenerateSecretString: Match.objectLike({
        GenerateStringKey: 'password',
        SecretStringTemplate: JSON.stringify({ username: 'glassbox', dbname: 'glassbox' }),
      }),
    });
    dev.data.resourceCountIs('AWS::SecretsManager::SecretTargetAttachment', 1);
    const instance = Object.values(resourcesOf(dev.data, 'AWS::RDS::DBInstance'))[0];
    expect(JSON.stringify(instance.Properties.MasterUserPassword)).toContain('resolve:secretsmanager');
  });

  test('the database only accepts connections from the task security groups', () => {
    const serverGroups = resourcesOf(dev.data, 'AWS::EC2::SecurityGroup');
    const server = Object.entries(serverGroups).find(([, group]) =>
      String(group.Properties.GroupDescription).includes('PostgreSQL'),
    );
    expect(server).toBeDefined();
    expect(server![1].Properties.SecurityGroupIngress).toBeUndefined();
    const ingress = Object.values(resourcesOf(dev.service, 'AWS::EC2::SecurityGroupIngress')).filter(
      (rule) => rule.Properties.FromPort === 5432,
    );
    expect(ingress.map((rule) => rule.Properties.Description).sort()).toEqual([
      'PostgreSQL from api-lite',
      'PostgreSQL from the migration task',
      'PostgreSQL from worker-agent',
      'PostgreSQL from worker-files',
    ]);
  });

  test('prod is Multi-AZ with deletion protection; dev is neither', () => {
    prod.data.hasResourceProperties('AWS::RDS::DBInstance', { MultiAZ: true, DeletionProtection: true });
    dev.data.hasResourceProperties('AWS::RDS::DBInstance', { MultiAZ: false, DeletionProtection: false });
    prod.data.hasResource('AWS::RDS::DBInstance', { DeletionPolicy: 'Snapshot' });
  });
});

describe('storage', () => {
  const uploads = () =>
    Object.values(resourcesOf(dev.data, 'AWS::S3::Bucket')).find((bucket) => bucket.Properties.CorsConfiguration)!;

  test('the upload bucket is encrypted, private and SSL-only', () => {
    const bucket = uploads();
    expect(bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault).toEqual({
      SSEAlgorithm: 'AES256',
    });
    expect(bucket.Properties.PublicAccessBlockConfiguration).toEqual({
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    dev.data.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  test('CORS allows presigned PUT from the configured origins', () => {
    expect(uploads().Properties.CorsConfiguration.CorsRules).toEqual([
      expect.objectContaining({
        AllowedMethods: ['PUT'],
        AllowedOrigins: ['http://localhost:3000', 'http://127.0.0.1:3000'],
        AllowedHeaders: expect.arrayContaining(['content-type']),
        ExposedHeaders: ['ETag'],
      }),
    ]);
  });

  test('incomplete multipart uploads are aborted', () => {
    expect(uploads().Properties.LifecycleConfiguration.Rules).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 }, Status: 'Enabled' }),
      ]),
    );
  });
});

describe('queues', () => {
  test.each(['file-jobs', 'agent-jobs'])('%s matches the worker retry budget and has its own DLQ', (name) => {
    const queues = resourcesOf(dev.data, 'AWS::SQS::Queue');
    const byName = (queueName: string) =>
      Object.entries(queues).find(([, queue]) => queue.Properties.QueueName === queueName)!;
    const [dlqLogicalId, dlq] = byName(`glassbox-dev-${name}-dlq`);
    const [, source] = byName(`glassbox-dev-${name}`);

    expect(source.Properties).toMatchObject({
      VisibilityTimeout: 120,
      MessageRetentionPeriod: 4 * 24 * 3600,
      MaximumMessageSize: FLEET_CONTRACT.maxMessageSizeBytes,
      SqsManagedSseEnabled: true,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlqLogicalId, 'Arn'] }, maxReceiveCount: 5 },
    });
    expect(dlq.Properties.MessageRetentionPeriod).toBe(14 * 24 * 3600);
    expect(dlq.Properties.MessageRetentionPeriod).toBeGreaterThan(source.Properties.MessageRetentionPeriod);
    expect(dlq.Properties.SqsManagedSseEnabled).toBe(true);
    expect(dlq.Properties.RedriveAllowPolicy.redrivePermission).toBe('byQueue');
    expect(JSON.stringify(dlq.Properties.RedriveAllowPolicy.sourceQueueArns)).toContain(`:glassbox-dev-${name}"`);
  });

  test('the backoff schedule fits before the DLQ: 4 retries of 10, 20, 40, 80 s within the retention', () => {
    const backoffSeconds = [10, 20, 40, 80];
    expect(backoffSeconds.length).toBe(FLEET_CONTRACT.maxReceiveCount - 1);
    expect(backoffSeconds.every((delay) => delay <= 300)).toBe(true);
    expect(FLEET_CONTRACT.dlqRetentionDays).toBeGreaterThan(FLEET_CONTRACT.sourceRetentionDays);
  });

  test('every queue enforces SSL', () => {
    const policies = resourcesOf(dev.data, 'AWS::SQS::QueuePolicy');
    expect(Object.keys(policies).length).toBe(5);
    for (const policy of Object.values(policies)) {
      expect(JSON.stringify(policy.Properties.PolicyDocument)).toContain('aws:SecureTransport');
    }
  });
});
