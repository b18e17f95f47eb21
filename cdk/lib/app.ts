import * as path from 'node:path';
import { App, Tags, Validations } from 'aws-cdk-lib';
import * as ecrAssets from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DataStack } from './stacks/data-stack';
import { type FleetImages, ServiceStack } from './stacks/service-stack';
import { STAGE_NAMES, type StageName, type StageSettings, isStageName, settingsFor } from './settings';

/** The repository root: the Docker build context for all three images. */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export interface StageStacks {
  readonly settings: StageSettings;
  readonly data: DataStack;
  readonly service: ServiceStack;
}

/** The images built from docker/Dockerfile, one target per binary. */
export function fleetImages(): FleetImages {
  const image = (target: string) =>
    ecs.ContainerImage.fromAsset(REPO_ROOT, {
      file: 'docker/Dockerfile',
      target,
      platform: ecrAssets.Platform.LINUX_AMD64,
    });
  return {
    apiLite: image('api-lite'),
    workerFiles: image('worker-files'),
    workerAgent: image('worker-agent'),
  };
}

/** Adds the two stacks of one stage to the app. */
export function addStage(app: App, settings: StageSettings, images: FleetImages): StageStacks {
  const env = { account: settings.account, region: settings.region };
  if (settings.account) {
    // Pin the AZs as context so synth never calls AWS to look them up.
    const key = `availability-zones:account=${settings.account}:region=${settings.region}`;
    if (app.node.tryGetContext(key) === undefined) {
      app.node.setContext(key, [...settings.availabilityZones]);
    }
  }
  const prefix = `GlassBox-${settings.stage}`;
  const data = new DataStack(app, `${prefix}-Data`, {
    settings,
    env,
    description: `GlassBox fleet (${settings.stage}): network, database, storage, queues, secrets`,
    terminationProtection: settings.retainData,
  });
  const service = new ServiceStack(app, `${prefix}-Service`, {
    settings,
    data,
    images,
    env,
    description: `GlassBox fleet (${settings.stage}): ECS services, ALB, schedules, monitoring`,
  });
  for (const stack of [data, service]) {
    Tags.of(stack).add('project', 'glassbox-fleet');
    Tags.of(stack).add('stage', settings.stage);
  }
  return { settings, data, service };
}

/**
 * Builds the whole app: every stage, or only the one named by `-c stage=...`.
 * cdk-nag's AwsSolutions pack runs as a validation plugin, so an
 * unacknowledged finding fails synthesis.
 */
export function buildApp(app: App, images: FleetImages = fleetImages()): StageStacks[] {
  const requested = app.node.tryGetContext('stage') as string | undefined;
  if (requested !== undefined && !isStageName(requested)) {
    throw new Error(`unknown stage '${requested}': expected one of ${STAGE_NAMES.join(', ')}`);
  }
  const stages: StageName[] = requested ? [requested] : [...STAGE_NAMES];
  const stacks = stages.map((stage) =>
    addStage(
      app,
      settingsFor(stage, {
        account: app.node.tryGetContext('account'),
        certificateArn: app.node.tryGetContext('certificateArn'),
        alarmEmail: app.node.tryGetContext('alarmEmail'),
        llmBaseUrl: app.node.tryGetContext('llmBaseUrl'),
      }),
      images,
    ),
  );
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  return stacks;
}
