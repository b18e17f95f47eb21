/**
 * Per-stage settings for the GlassBox fleet.
 *
 * Everything that differs between dev, staging and prod lives here, so the
 * constructs stay free of `if (stage === 'prod')` branches. Values that are
 * shared by the binaries and the infrastructure (queue timings, the retry
 * budget) live in `FLEET_CONTRACT` below, next to the reason for each number.
 */

export type StageName = 'dev' | 'staging' | 'prod';

export const STAGE_NAMES: readonly StageName[] = ['dev', 'staging', 'prod'];

/** CPU and memory of one Fargate task, and how many of them may run. */
export interface ServiceSizing {
  /** Fargate CPU units (1024 = 1 vCPU). */
  readonly cpu: number;
  /** Fargate memory in MiB; must be valid for the chosen CPU. */
  readonly memoryMiB: number;
  readonly minTasks: number;
  readonly maxTasks: number;
}

export interface WorkerSizing extends ServiceSizing {
  /**
   * Target for (visible + in-flight messages) / running tasks. Roughly: how
   * many jobs one task may have queued or in hand before we add another task.
   */
  readonly backlogPerTask: number;
  /** Run on Fargate Spot. Workers tolerate interruption (SIGTERM, then 120 s). */
  readonly spot: boolean;
}

export interface ScheduleSettings {
  /** Short name, unique within the stage; becomes part of the schedule name. */
  readonly name: string;
  /** An EventBridge Scheduler expression, e.g. `cron(0 3 * * ? *)` or `rate(1 day)`. */
  readonly expression: string;
  /** Which job queue receives the message. */
  readonly queue: 'file-jobs' | 'agent-jobs';
  /** The message body: a job message the workers understand, never state (DESIGN invariant 1). */
  readonly payload: Record<string, unknown>;
  readonly enabled: boolean;
}

export interface StageSettings {
  readonly stage: StageName;
  /**
   * The AWS account to pin the stage to. Leave undefined for account-agnostic
   * stacks (the deploying credentials decide). When set, the AZs below are
   * written into the context, so synth still makes no lookup.
   */
  readonly account?: string;
  readonly region: string;
  /** The VPC's AZs; named here so synth never looks them up. */
  readonly availabilityZones: readonly string[];

  readonly network: {
    readonly cidr: string;
    /** One per AZ for resilience (prod), or fewer to save cost. */
    readonly natGateways: number;
  };

  readonly database: {
    /** e.g. `t4g.micro`; the `db.` prefix is added by CDK. */
    readonly instanceType: string;
    readonly allocatedStorageGiB: number;
    readonly maxAllocatedStorageGiB: number;
    readonly multiAz: boolean;
    readonly backupRetentionDays: number;
    readonly deletionProtection: boolean;
    /** Performance Insights is not offered on micro/small burstable classes. */
    readonly performanceInsights: boolean;
  };

  readonly storage: {
    /** Origins allowed to PUT to presigned URLs from a browser. */
    readonly corsAllowedOrigins: readonly string[];
    readonly abortIncompleteUploadAfterDays: number;
    readonly versioned: boolean;
  };

  /** Keep stateful resources (bucket, database snapshot, log groups) on stack deletion. */
  readonly retainData: boolean;
  readonly logRetentionDays: number;

  readonly api: ServiceSizing & {
    /**
     * ACM certificate for the ALB. Without one the ALB listens on HTTP only,
     * which is acceptable for dev and nothing else.
     */
    readonly certificateArn?: string;
  };
  readonly workerFiles: WorkerSizing;
  readonly workerAgent: WorkerSizing;

  readonly embedding: {
    readonly provider: 'local' | 'openai';
    /** For `openai`: the OpenAI-compatible endpoint and model. */
    readonly baseUrl?: string;
    readonly model?: string;
    readonly dimensions?: number;
  };
  readonly llm: {
    /** An OpenAI-compatible chat endpoint with tool calling. */
    readonly baseUrl: string;
  };

  readonly schedules: readonly ScheduleSettings[];

  readonly alarms: {
    /** Optional e-mail subscriber of the alarm topic. */
    readonly email?: string;
    /** Age of the oldest visible message on a job queue before we page. */
    readonly oldestMessageAgeSeconds: number;
    /** ALB 5xx responses as a percentage of requests. */
    readonly apiErrorRatePercent: number;
    /** Jobs that failed for good (permanent or dead-lettered) as a percentage of finished jobs, per worker. */
    readonly workerErrorRatePercent: number;
  };
}

/**
 * Numbers the infrastructure shares with the Rust binaries. Change them only
 * together with the worker code.
 */
export const FLEET_CONTRACT = {
  /** Workers heartbeat (extend visibility) at half of this. */
  visibilityTimeoutSeconds: 120,
  /**
   * Transient failures back off 10, 20, 40, 80 s (full jitter, cap 300 s) via
   * ChangeMessageVisibility; the fifth receive that fails goes to the DLQ.
   */
  maxReceiveCount: 5,
  sourceRetentionDays: 4,
  /** Longer than the source so a message never expires before ops see it. */
  dlqRetentionDays: 14,
  /** Messages carry ids, a kind and trace context; 16 KiB is ample headroom. */
  maxMessageSizeBytes: 16 * 1024,
  /** Workers finish or checkpoint within 100 s of SIGTERM; 120 s is the Fargate maximum. */
  workerStopTimeoutSeconds: 120,
  apiStopTimeoutSeconds: 30,
  apiPort: 8080,
  metricsPort: 9100,
  /** Where the Dockerfile bakes the local embedding model. */
  modelDir: '/opt/glassbox/models/all-MiniLM-L6-v2',
  databaseName: 'glassbox',
  databaseUser: 'glassbox',
} as const;

/**
 * The fleet's clock on AWS. Schedules themselves live in Postgres (cron, action,
 * filter; managed with `fleetctl schedules`); every minute this sends a
 * `schedule.tick` wake-up to file-jobs, and worker-files fires whatever is due.
 * api-lite's leader fires them too; each (schedule, fire time) fires once whichever
 * trigger gets there first, so either alone is enough and both together are safe.
 * The body is a job message (`shared::queue::JobMessage`) with nil ids.
 */
export const SCHEDULE_TICK = {
  v: 1,
  kind: 'schedule.tick',
  job_id: '00000000-0000-0000-0000-000000000000',
  org_id: '00000000-0000-0000-0000-000000000000',
} as const;

const SCHEDULE_CLOCK: ScheduleSettings = {
  name: 'schedule-clock',
  expression: 'rate(1 minute)',
  queue: 'file-jobs',
  payload: SCHEDULE_TICK,
  enabled: true,
};

const SETTINGS: Record<StageName, StageSettings> = {
  dev: {
    stage: 'dev',
    region: 'eu-west-1',
    availabilityZones: ['eu-west-1a', 'eu-west-1b'],
    network: { cidr: '10.40.0.0/16', natGateways: 1 },
    database: {
      instanceType: 't4g.micro',
      allocatedStorageGiB: 20,
      maxAllocatedStorageGiB: 50,
      multiAz: false,
      backupRetentionDays: 1,
      deletionProtection: false,
      performanceInsights: false,
    },
    storage: {
      corsAllowedOrigins: ['http://localhost:3000', 'http://127.0.0.1:3000'],
      abortIncompleteUploadAfterDays: 1,
      versioned: false,
    },
    retainData: false,
    logRetentionDays: 7,
    api: { cpu: 256, memoryMiB: 512, minTasks: 1, maxTasks: 2 },
    workerFiles: { cpu: 1024, memoryMiB: 2048, minTasks: 0, maxTasks: 2, backlogPerTask: 20, spot: true },
    workerAgent: { cpu: 256, memoryMiB: 512, minTasks: 0, maxTasks: 2, backlogPerTask: 10, spot: true },
    embedding: { provider: 'local' },
    llm: { baseUrl: 'https://llm.dev.example.invalid/v1' },
    schedules: [SCHEDULE_CLOCK],
    alarms: { oldestMessageAgeSeconds: 1800, apiErrorRatePercent: 10, workerErrorRatePercent: 25 },
  },
  staging: {
    stage: 'staging',
    region: 'eu-west-1',
    availabilityZones: ['eu-west-1a', 'eu-west-1b'],
    network: { cidr: '10.41.0.0/16', natGateways: 1 },
    database: {
      instanceType: 't4g.medium',
      allocatedStorageGiB: 50,
      maxAllocatedStorageGiB: 200,
      multiAz: false,
      backupRetentionDays: 7,
      deletionProtection: true,
      performanceInsights: true,
    },
    storage: {
      corsAllowedOrigins: ['https://staging.glassbox.example.invalid'],
      abortIncompleteUploadAfterDays: 3,
      versioned: true,
    },
    retainData: true,
    logRetentionDays: 30,
    api: { cpu: 512, memoryMiB: 1024, minTasks: 1, maxTasks: 4 },
    workerFiles: { cpu: 1024, memoryMiB: 2048, minTasks: 0, maxTasks: 4, backlogPerTask: 20, spot: true },
    workerAgent: { cpu: 512, memoryMiB: 1024, minTasks: 0, maxTasks: 4, backlogPerTask: 10, spot: true },
    embedding: { provider: 'local' },
    llm: { baseUrl: 'https://llm.staging.example.invalid/v1' },
    schedules: [SCHEDULE_CLOCK],
    alarms: { oldestMessageAgeSeconds: 900, apiErrorRatePercent: 5, workerErrorRatePercent: 15 },
  },
  prod: {
    stage: 'prod',
    region: 'eu-west-1',
    availabilityZones: ['eu-west-1a', 'eu-west-1b', 'eu-west-1c'],
    network: { cidr: '10.42.0.0/16', natGateways: 3 },
    database: {
      instanceType: 'm7g.large',
      allocatedStorageGiB: 100,
      maxAllocatedStorageGiB: 1000,
      multiAz: true,
      backupRetentionDays: 14,
      deletionProtection: true,
      performanceInsights: true,
    },
    storage: {
      corsAllowedOrigins: ['https://app.glassbox.example.invalid'],
      abortIncompleteUploadAfterDays: 7,
      versioned: true,
    },
    retainData: true,
    logRetentionDays: 90,
    api: { cpu: 1024, memoryMiB: 2048, minTasks: 2, maxTasks: 10 },
    workerFiles: { cpu: 2048, memoryMiB: 4096, minTasks: 1, maxTasks: 20, backlogPerTask: 20, spot: false },
    workerAgent: { cpu: 512, memoryMiB: 1024, minTasks: 1, maxTasks: 20, backlogPerTask: 10, spot: false },
    embedding: { provider: 'local' },
    llm: { baseUrl: 'https://llm.prod.example.invalid/v1' },
    schedules: [SCHEDULE_CLOCK],
    alarms: { oldestMessageAgeSeconds: 600, apiErrorRatePercent: 2, workerErrorRatePercent: 10 },
  },
};

/** Overrides accepted from `cdk -c key=value` (all optional). */
export interface SettingsOverrides {
  readonly account?: string;
  readonly certificateArn?: string;
  readonly alarmEmail?: string;
  readonly llmBaseUrl?: string;
}

export function settingsFor(stage: StageName, overrides: SettingsOverrides = {}): StageSettings {
  const base = SETTINGS[stage];
  return {
    ...base,
    account: overrides.account ?? base.account,
    api: { ...base.api, certificateArn: overrides.certificateArn ?? base.api.certificateArn },
    alarms: { ...base.alarms, email: overrides.alarmEmail ?? base.alarms.email },
    llm: { baseUrl: overrides.llmBaseUrl ?? base.llm.baseUrl },
  };
}

export function isStageName(value: string): value is StageName {
  return (STAGE_NAMES as readonly string[]).includes(value);
}
