import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as rds from 'aws-cdk-lib/aws-rds';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { StageSettings } from '../settings';

export interface MonitoredQueue {
  /** `file-jobs`, `agent-jobs`, `schedules`. */
  readonly name: string;
  /** The source queue; undefined for the scheduler DLQ, which has none. */
  readonly queue?: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
}

export interface MonitoringProps {
  readonly settings: StageSettings;
  readonly queues: MonitoredQueue[];
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  readonly services: Record<string, ecs.FargateService>;
  readonly database: rds.IDatabaseInstance;
  /**
   * Each queue worker's JSON log group. Job outcomes are counted from its log lines
   * ("job succeeded", "job failed" with an outcome), the same events the Prometheus
   * counter `glassbox_jobs_total` counts, because CloudWatch cannot scrape Prometheus.
   */
  readonly workerLogGroups: Record<string, logs.ILogGroup>;
}

/**
 * Alarms and one dashboard per stage.
 *
 * Alarms use native AWS metrics (SQS, ALB, RDS): they work even when a worker
 * is down, which is when the Prometheus endpoints are silent.
 */
export class Monitoring extends Construct {
  public readonly topic: sns.Topic;
  public readonly alarms: cloudwatch.Alarm[] = [];
  public readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const { settings } = props;
    const stage = settings.stage;
    const prefix = `glassbox-${stage}`;

    // CloudWatch cannot publish to a topic encrypted with the AWS-managed SNS key,
    // so the topic gets its own key that lets CloudWatch use it.
    const key = new kms.Key(this, 'AlarmTopicKey', {
      description: `GlassBox ${stage} alarm topic`,
      enableKeyRotation: true,
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    this.topic = new sns.Topic(this, 'AlarmTopic', {
      topicName: `${prefix}-alarms`,
      masterKey: key,
      enforceSSL: true,
    });
    if (settings.alarms.email) {
      this.topic.addSubscription(new subscriptions.EmailSubscription(settings.alarms.email));
    }
    const alarmAction = new actions.SnsAction(this.topic);
    const addAlarm = (alarm: cloudwatch.Alarm) => {
      alarm.addAlarmAction(alarmAction);
      alarm.addOkAction(alarmAction);
      this.alarms.push(alarm);
      return alarm;
    };

    const oneMinute = Duration.minutes(1);
    for (const entry of props.queues) {
      addAlarm(
        new cloudwatch.Alarm(this, `${entry.name}-dlq-not-empty`, {
          alarmName: `${prefix}-${entry.name}-dlq-not-empty`,
          alarmDescription: `Messages on the ${entry.name} DLQ. Inspect them with the API's DLQ view, then redrive (runbook: "Redrive a DLQ").`,
          metric: entry.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
            period: oneMinute,
            statistic: 'Maximum',
          }),
          threshold: 0,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          evaluationPeriods: 1,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
      if (entry.queue) {
        addAlarm(
          new cloudwatch.Alarm(this, `${entry.name}-oldest-message-age`, {
            alarmName: `${prefix}-${entry.name}-oldest-message-age`,
            alarmDescription: `The oldest ${entry.name} message has waited over ${settings.alarms.oldestMessageAgeSeconds} s: workers are down, stuck or at max capacity.`,
            metric: entry.queue.metricApproximateAgeOfOldestMessage({ period: oneMinute, statistic: 'Maximum' }),
            threshold: settings.alarms.oldestMessageAgeSeconds,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluationPeriods: 5,
            datapointsToAlarm: 3,
            treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
          }),
        );
      }
    }

    const albMetric = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/ApplicationELB',
        metricName,
        dimensionsMap: { LoadBalancer: props.loadBalancer.loadBalancerFullName },
        period: oneMinute,
        statistic: 'Sum',
      });
    const apiErrorRate = new cloudwatch.MathExpression({
      expression: 'IF(requests > 0, 100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests, 0)',
      usingMetrics: {
        requests: albMetric('RequestCount'),
        target5xx: albMetric('HTTPCode_Target_5XX_Count'),
        elb5xx: albMetric('HTTPCode_ELB_5XX_Count'),
      },
      period: oneMinute,
      label: 'api-lite 5xx rate (%)',
    });
    addAlarm(
      new cloudwatch.Alarm(this, 'api-error-rate', {
        alarmName: `${prefix}-api-error-rate`,
        alarmDescription: `More than ${settings.alarms.apiErrorRatePercent}% of API requests fail with 5xx.`,
        metric: apiErrorRate,
        threshold: settings.alarms.apiErrorRatePercent,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 5,
        datapointsToAlarm: 3,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    );

    // Worker error rate: jobs that failed for good (permanent errors and dead
    // letters; retries that recover are not failures) over jobs that finished.
    const metricsNamespace = `GlassBox/${stage}`;
    for (const [worker, logGroup] of Object.entries(props.workerLogGroups)) {
      const outcomeMetric = (id: string, metricName: string, pattern: string) => {
        new logs.MetricFilter(this, `${worker}-${id}`, {
          logGroup,
          metricNamespace: metricsNamespace,
          metricName,
          filterPattern: logs.FilterPattern.literal(pattern),
          metricValue: '1',
          defaultValue: 0,
        });
        return new cloudwatch.Metric({
          namespace: metricsNamespace,
          metricName,
          period: oneMinute,
          statistic: 'Sum',
        });
      };
      const succeeded = outcomeMetric(
        'jobs-succeeded',
        `${worker}-jobs-succeeded`,
        '{ $.message = "job succeeded" }',
      );
      const failed = outcomeMetric(
        'jobs-failed',
        `${worker}-jobs-failed`,
        '{ $.message = "job failed" && ($.outcome = "failed" || $.outcome = "dead_lettered") }',
      );
      addAlarm(
        new cloudwatch.Alarm(this, `${worker}-error-rate`, {
          alarmName: `${prefix}-${worker}-error-rate`,
          alarmDescription: `More than ${settings.alarms.workerErrorRatePercent}% of ${worker} jobs fail for good (permanent error or dead letter).`,
          metric: new cloudwatch.MathExpression({
            // Five finished jobs at least, so one bad upload in a quiet minute does not page.
            expression: 'IF(ok + bad >= 5, 100 * bad / (ok + bad), 0)',
            usingMetrics: { ok: succeeded, bad: failed },
            period: Duration.minutes(5),
            label: `${worker} job error rate (%)`,
          }),
          threshold: settings.alarms.workerErrorRatePercent,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
          evaluationPeriods: 3,
          datapointsToAlarm: 2,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    }

    addAlarm(
      new cloudwatch.Alarm(this, 'database-cpu', {
        alarmName: `${prefix}-database-cpu`,
        alarmDescription: 'PostgreSQL CPU above 80% for 15 minutes.',
        metric: props.database.metricCPUUtilization({ period: Duration.minutes(5) }),
        threshold: 80,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluationPeriods: 3,
      }),
    );
    addAlarm(
      new cloudwatch.Alarm(this, 'database-free-storage', {
        alarmName: `${prefix}-database-free-storage`,
        alarmDescription: 'PostgreSQL has less than 5 GiB free (storage autoscaling may be at its maximum).',
        metric: props.database.metricFreeStorageSpace({ period: Duration.minutes(5) }),
        threshold: 5 * 1024 ** 3,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 3,
      }),
    );

    this.dashboard = this.buildDashboard(prefix, props, apiErrorRate, albMetric);
  }

  private buildDashboard(
    prefix: string,
    props: MonitoringProps,
    apiErrorRate: cloudwatch.MathExpression,
    albMetric: (name: string) => cloudwatch.Metric,
  ): cloudwatch.Dashboard {
    const oneMinute = Duration.minutes(1);
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: prefix,
      defaultInterval: Duration.hours(6),
    });

    const sourceQueues = props.queues.filter((entry) => entry.queue !== undefined);
    dashboard.addWidgets(
      new cloudwatch.TextWidget({
        markdown: `# GlassBox ${props.settings.stage}\nQueues, workers, API and database. Alarms page the \`${prefix}-alarms\` topic; the runbook is docs/runbook.md.`,
        width: 24,
        height: 2,
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Queue depth (visible / in flight)',
        width: 8,
        left: sourceQueues.flatMap((entry) => [
          entry.queue!.metricApproximateNumberOfMessagesVisible({ period: oneMinute, statistic: 'Maximum', label: `${entry.name} visible` }),
          entry.queue!.metricApproximateNumberOfMessagesNotVisible({ period: oneMinute, statistic: 'Maximum', label: `${entry.name} in flight` }),
        ]),
      }),
      new cloudwatch.GraphWidget({
        title: 'Age of oldest message (s)',
        width: 8,
        left: sourceQueues.map((entry) =>
          entry.queue!.metricApproximateAgeOfOldestMessage({ period: oneMinute, statistic: 'Maximum', label: entry.name }),
        ),
      }),
      new cloudwatch.GraphWidget({
        title: 'Dead-letter queues',
        width: 8,
        left: props.queues.map((entry) =>
          entry.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: oneMinute, statistic: 'Maximum', label: `${entry.name} DLQ` }),
        ),
      }),
    );

    const serviceMetric = (serviceName: string, metricName: string) =>
      new cloudwatch.Metric({
        namespace: 'ECS/ContainerInsights',
        metricName,
        dimensionsMap: {
          ClusterName: props.services[serviceName].cluster.clusterName,
          ServiceName: props.services[serviceName].serviceName,
        },
        period: oneMinute,
        statistic: 'Average',
        label: serviceName,
      });
    const serviceNames = Object.keys(props.services);
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Running tasks',
        width: 8,
        left: serviceNames.map((name) => serviceMetric(name, 'RunningTaskCount')),
      }),
      new cloudwatch.GraphWidget({
        title: 'CPU (%)',
        width: 8,
        left: serviceNames.map((name) => props.services[name].metricCpuUtilization({ period: oneMinute, label: name })),
      }),
      new cloudwatch.GraphWidget({
        title: 'Memory (%)',
        width: 8,
        left: serviceNames.map((name) => props.services[name].metricMemoryUtilization({ period: oneMinute, label: name })),
      }),
    );

    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'API requests and 5xx',
        width: 8,
        left: [albMetric('RequestCount')],
        right: [albMetric('HTTPCode_Target_5XX_Count'), albMetric('HTTPCode_ELB_5XX_Count')],
      }),
      new cloudwatch.GraphWidget({
        title: 'API 5xx rate (%)',
        width: 8,
        left: [apiErrorRate],
      }),
      new cloudwatch.GraphWidget({
        title: 'API latency (s)',
        width: 8,
        left: ['p50', 'p95', 'p99'].map(
          (statistic) =>
            new cloudwatch.Metric({
              namespace: 'AWS/ApplicationELB',
              metricName: 'TargetResponseTime',
              dimensionsMap: { LoadBalancer: props.loadBalancer.loadBalancerFullName },
              period: oneMinute,
              statistic,
              label: statistic,
            }),
        ),
      }),
    );

    dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Database CPU (%) and connections',
        width: 12,
        left: [props.database.metricCPUUtilization({ period: oneMinute })],
        right: [props.database.metricDatabaseConnections({ period: oneMinute })],
      }),
      new cloudwatch.GraphWidget({
        title: 'Database free storage (bytes)',
        width: 12,
        left: [props.database.metricFreeStorageSpace({ period: Duration.minutes(5) })],
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({
        title: 'Alarms',
        width: 24,
        alarms: this.alarms,
      }),
    );
    return dashboard;
  }
}
