import { Duration } from 'aws-cdk-lib';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { ScheduleSettings, StageSettings } from '../settings';

export interface SchedulesProps {
  readonly settings: StageSettings;
  readonly queues: Record<ScheduleSettings['queue'], sqs.IQueue>;
  /** Receives what Scheduler could not deliver after its retries. */
  readonly deadLetterQueue: sqs.IQueue;
}

/**
 * EventBridge Scheduler sends reprocessing wake-ups to the job queues: the
 * `schedule.tick` clock, on which worker-files fires the Postgres schedules that
 * are due (retry transient failures, re-embed after a model change, re-extract).
 * The message carries no state; the schedules and their fires live in Postgres.
 */
export class Schedules extends Construct {
  public readonly group: scheduler.ScheduleGroup;
  public readonly schedules: scheduler.Schedule[] = [];

  constructor(scope: Construct, id: string, props: SchedulesProps) {
    super(scope, id);
    const { settings } = props;

    this.group = new scheduler.ScheduleGroup(this, 'Group', {
      scheduleGroupName: `glassbox-${settings.stage}`,
    });

    for (const entry of settings.schedules) {
      const target = new targets.SqsSendMessage(props.queues[entry.queue], {
        input: scheduler.ScheduleTargetInput.fromObject(entry.payload),
        deadLetterQueue: props.deadLetterQueue,
        retryAttempts: 10,
        maxEventAge: Duration.hours(2),
      });
      this.schedules.push(
        new scheduler.Schedule(this, entry.name, {
          scheduleName: `glassbox-${settings.stage}-${entry.name}`,
          description: `GlassBox ${settings.stage}: ${entry.name} -> ${entry.queue}`,
          scheduleGroup: this.group,
          schedule: scheduler.ScheduleExpression.expression(entry.expression),
          target,
          enabled: entry.enabled,
          timeWindow: scheduler.TimeWindow.off(),
        }),
      );
    }
  }
}
