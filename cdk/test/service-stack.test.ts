import { Match } from 'aws-cdk-lib/assertions';
import { FLEET_CONTRACT } from '../lib/settings';
import { type StageTemplates, buildTestApp, removeTestOutput, resourcesOf, templatesOf } from './helpers';

afterAll(removeTestOutput);

const { stages } = buildTestApp();
const dev: StageTemplates = templatesOf(stages.dev);
const prod: StageTemplates = templatesOf(stages.prod);

type ContainerDefinition = {
  Name: string;
  Command?: string[];
  StopTimeout?: number;
  Environment?: { Name: string; Value: unknown }[];
  Secrets?: { Name: string; ValueFrom: unknown }[];
  HealthCheck?: { Command: string[] };
};

function container(templates: StageTemplates, family: string): ContainerDefinition {
  const definitions = Object.values(resourcesOf(templates.service, 'AWS::ECS::TaskDefinition')).filter(
    (definition) => definition.Properties.Family === family,
  );
  expect(definitions).toHaveLength(1);
  return definitions[0].Properties.ContainerDefinitions[0];
}

const names = (entries: { Name: string }[] | undefined) => (entries ?? []).map((entry) => entry.Name).sort();

describe('compute', () => {
  test('a Fargate cluster with Container Insights and three services', () => {
    dev.service.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
    });
    dev.service.resourceCountIs('AWS::ECS::Service', 3);
    for (const definition of Object.values(resourcesOf(dev.service, 'AWS::ECS::TaskDefinition'))) {
      expect(definition.Properties.RequiresCompatibilities).toEqual(['FARGATE']);
    }
  });

  test('api-lite sits behind an internet-facing ALB that checks /health', () => {
    dev.service.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', {
      Scheme: 'internet-facing',
      LoadBalancerAttributes: Match.arrayWith([
        { Key: 'routing.http.drop_invalid_header_fields.enabled', Value: 'true' },
        { Key: 'access_logs.s3.enabled', Value: 'true' },
      ]),
    });
    dev.service.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
      Port: FLEET_CONTRACT.apiPort,
      TargetType: 'ip',
      HealthCheckPath: '/health',
    });
    dev.service.hasResourceProperties('AWS::ECS::Service', {
      ServiceName: 'glassbox-dev-api-lite',
      LoadBalancers: [Match.objectLike({ ContainerName: 'api-lite', ContainerPort: FLEET_CONTRACT.apiPort })],
      DeploymentConfiguration: Match.objectLike({
        DeploymentCircuitBreaker: { Enable: true, Rollback: true },
      }),
    });
  });

  test('with a certificate the ALB serves HTTPS and redirects HTTP', () => {
    const withCertificate = templatesOf(
      buildTestApp({ stage: 'prod', certificateArn: 'arn:aws:acm:eu-west-1:111111111111:certificate/test' }).stages.prod,
    );
    withCertificate.service.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 443,
      Protocol: 'HTTPS',
    });
    withCertificate.service.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
      Port: 80,
      DefaultActions: [Match.objectLike({ Type: 'redirect' })],
    });
  });

  test('workers get 120 s to stop, the Fargate maximum', () => {
    for (const family of ['glassbox-dev-worker-files', 'glassbox-dev-worker-agent']) {
      expect(container(dev, family).StopTimeout).toBe(120);
      expect(container(dev, family).HealthCheck?.Command).toEqual([
        'CMD',
        '/usr/local/bin/glassbox-healthcheck',
        'worker',
      ]);
    }
  });

  test('database credentials come from the secret fields; other secrets only where used', () => {
    const databaseVariables = ['HOST', 'NAME', 'PASSWORD', 'PORT', 'USER'].map((part) => `GLASSBOX_DATABASE__${part}`);
    expect(names(container(dev, 'glassbox-dev-api-lite').Secrets)).toEqual(
      [...databaseVariables, 'GLASSBOX_AUTH__JWT_SECRET'].sort(),
    );
    expect(names(container(dev, 'glassbox-dev-worker-files').Secrets)).toEqual(databaseVariables);
    expect(names(container(dev, 'glassbox-dev-worker-agent').Secrets)).toEqual(
      [...databaseVariables, 'GLASSBOX_LLM__API_KEY'].sort(),
    );
    const password = container(dev, 'glassbox-dev-worker-files').Secrets!.find(
      (secret) => secret.Name === 'GLASSBOX_DATABASE__PASSWORD',
    )!;
    expect(JSON.stringify(password.ValueFrom)).toContain(':password::');
  });

  test('every variable the containers get is one the binaries read', () => {
    const allowed = /^(RUST_LOG|GLASSBOX_(DATABASE|AWS|STORAGE|QUEUES|AUTH|API|METRICS|EMBEDDING|LLM|TELEMETRY)__[A-Z_]+)$/;
    for (const family of ['api-lite', 'worker-files', 'worker-agent', 'migrate']) {
      const definition = container(dev, `glassbox-dev-${family}`);
      for (const name of [...names(definition.Environment), ...names(definition.Secrets)]) {
        expect(name).toMatch(allowed);
      }
      expect(names(definition.Environment)).not.toContain('GLASSBOX_AWS__ENDPOINT_URL');
    }
    const workerFiles = names(container(dev, 'glassbox-dev-worker-files').Environment);
    expect(workerFiles).toEqual(
      expect.arrayContaining([
        'GLASSBOX_QUEUES__FILE_JOBS',
        'GLASSBOX_STORAGE__BUCKET',
        'GLASSBOX_EMBEDDING__MODEL_DIR',
        'GLASSBOX_METRICS__LISTEN',
      ]),
    );
  });

  test('the migration is a one-off task running `api-lite migrate`', () => {
    expect(container(dev, 'glassbox-dev-migrate').Command).toEqual(['migrate']);
    expect(container(dev, 'glassbox-dev-api-lite').Command).toEqual(['serve']);
    dev.service.hasOutput('MigrateTaskDefinitionArn', {});
    dev.data.hasOutput('AppSubnetIds', {});
  });
});

describe('worker scaling', () => {
  test.each([
    ['worker-files', 'FILE_JOBS'],
    ['worker-agent', 'AGENT_JOBS'],
  ])('%s tracks backlog per task with metric math', (name) => {
    dev.service.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      PolicyName: `glassbox-dev-${name}-backlog-per-task`,
      PolicyType: 'TargetTrackingScaling',
      TargetTrackingScalingPolicyConfiguration: Match.objectLike({
        CustomizedMetricSpecification: {
          Metrics: Match.arrayWith([
            Match.objectLike({ Id: 'visible', ReturnData: false }),
            Match.objectLike({ Id: 'inflight', ReturnData: false }),
            Match.objectLike({ Id: 'running', ReturnData: false }),
            Match.objectLike({ Expression: '(visible + inflight) / running', ReturnData: true }),
          ]),
        },
      }),
    });
  });

  test('a step policy starts a worker when messages wait and none runs', () => {
    const steps = Object.values(resourcesOf(dev.service, 'AWS::ApplicationAutoScaling::ScalingPolicy')).filter(
      (policy) => policy.Properties.PolicyType === 'StepScaling',
    );
    expect(steps).toHaveLength(2);
    for (const policy of steps) {
      expect(policy.Properties.StepScalingPolicyConfiguration).toMatchObject({
        AdjustmentType: 'ChangeInCapacity',
        StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }],
      });
    }
    dev.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Metrics: Match.arrayWith([Match.objectLike({ Expression: 'IF(FILL(running, 0) < 1, visible, 0)' })]),
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  test('workers may scale to zero in dev and keep one task in prod', () => {
    const bounds = (templates: StageTemplates) =>
      Object.values(resourcesOf(templates.service, 'AWS::ApplicationAutoScaling::ScalableTarget')).map(
        (target) => target.Properties.MinCapacity,
      );
    expect(bounds(dev).sort()).toEqual([0, 0, 1]);
    expect(bounds(prod).sort()).toEqual([1, 1, 2]);
  });
});

describe('schedules', () => {
  test('EventBridge Scheduler sends reprocessing messages to SQS with retries and a DLQ', () => {
    dev.service.hasResourceProperties('AWS::Scheduler::Schedule', {
      Name: 'glassbox-dev-schedule-clock',
      State: 'ENABLED',
      Target: Match.objectLike({
        Input: Match.serializedJson({
          v: 1,
          kind: 'schedule.tick',
          job_id: '00000000-0000-0000-0000-000000000000',
          org_id: '00000000-0000-0000-0000-000000000000',
        }),
        RetryPolicy: { MaximumEventAgeInSeconds: 7200, MaximumRetryAttempts: 10 },
        DeadLetterConfig: { Arn: Match.anyValue() },
      }),
    });
  });
});

describe('monitoring', () => {
  const alarmNames = (templates: StageTemplates) =>
    Object.values(resourcesOf(templates.service, 'AWS::CloudWatch::Alarm'))
      .map((alarm) => alarm.Properties.AlarmName)
      .filter((name): name is string => typeof name === 'string')
      .sort();

  test('alarms on DLQ depth, age of oldest message and API error rate', () => {
    expect(alarmNames(dev)).toEqual(
      expect.arrayContaining([
        'glassbox-dev-file-jobs-dlq-not-empty',
        'glassbox-dev-agent-jobs-dlq-not-empty',
        'glassbox-dev-schedules-dlq-not-empty',
        'glassbox-dev-file-jobs-oldest-message-age',
        'glassbox-dev-agent-jobs-oldest-message-age',
        'glassbox-dev-api-error-rate',
      ]),
    );
    dev.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'glassbox-dev-file-jobs-dlq-not-empty',
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      AlarmActions: [Match.anyValue()],
    });
    dev.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'glassbox-dev-file-jobs-oldest-message-age',
      MetricName: 'ApproximateAgeOfOldestMessage',
    });
    dev.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'glassbox-dev-api-error-rate',
      Metrics: Match.arrayWith([Match.objectLike({ Expression: Match.stringLikeRegexp('5xx') })]),
    });
  });

  test('alarms on each worker error rate, counted from its JSON job outcome logs', () => {
    for (const worker of ['worker-files', 'worker-agent']) {
      dev.service.hasResourceProperties('AWS::Logs::MetricFilter', {
        LogGroupName: Match.anyValue(),
        FilterPattern: '{ $.message = "job failed" && ($.outcome = "failed" || $.outcome = "dead_lettered") }',
        MetricTransformations: [
          Match.objectLike({ MetricNamespace: 'GlassBox/dev', MetricName: `${worker}-jobs-failed`, MetricValue: '1' }),
        ],
      });
      dev.service.hasResourceProperties('AWS::Logs::MetricFilter', {
        FilterPattern: '{ $.message = "job succeeded" }',
        MetricTransformations: [Match.objectLike({ MetricName: `${worker}-jobs-succeeded` })],
      });
      dev.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: `glassbox-dev-${worker}-error-rate`,
        Threshold: 25,
        Metrics: Match.arrayWith([
          Match.objectLike({ Expression: 'IF(ok + bad >= 5, 100 * bad / (ok + bad), 0)' }),
        ]),
        AlarmActions: [Match.anyValue()],
      });
    }
    prod.service.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'glassbox-prod-worker-files-error-rate',
      Threshold: 10,
    });
  });

  test('alarms notify an encrypted topic, and there is a dashboard', () => {
    dev.service.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    dev.service.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    dev.service.hasResourceProperties('AWS::CloudWatch::Dashboard', { DashboardName: 'glassbox-dev' });
  });
});
