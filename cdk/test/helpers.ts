import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { type StageStacks, buildApp } from '../lib/app';
import type { StageName } from '../lib/settings';

/** The feature flags and settings from cdk.json, so tests see what `cdk synth` sees. */
export function cdkJsonContext(): Record<string, unknown> {
  const cdkJson = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8'));
  return cdkJson.context ?? {};
}

export interface SynthesizedApp {
  readonly app: App;
  readonly stages: Record<StageName, StageStacks>;
}

const outdirs: string[] = [];

/** Removes the cloud assemblies the tests wrote; call it from `afterAll`. */
export function removeTestOutput(): void {
  for (const outdir of outdirs.splice(0)) {
    fs.rmSync(outdir, { recursive: true, force: true });
  }
}

/** Builds the real app (all stages, real image assets) with optional extra context. */
export function buildTestApp(extraContext: Record<string, unknown> = {}): SynthesizedApp {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'glassbox-cdk-test-'));
  outdirs.push(outdir);
  const app = new App({ outdir, context: { ...cdkJsonContext(), ...extraContext } });
  const stacks = buildApp(app);
  const stages = Object.fromEntries(stacks.map((entry) => [entry.settings.stage, entry])) as Record<
    StageName,
    StageStacks
  >;
  return { app, stages };
}

export interface StageTemplates {
  readonly data: Template;
  readonly service: Template;
}

export function templatesOf(stacks: StageStacks): StageTemplates {
  return { data: Template.fromStack(stacks.data), service: Template.fromStack(stacks.service) };
}

/** Resources of one type, keyed by logical id. */
export function resourcesOf(template: Template, type: string): Record<string, { Properties: Record<string, any> }> {
  return template.findResources(type) as Record<string, { Properties: Record<string, any> }>;
}

/**
 * The template with every asset hash (64 hex characters) replaced, so the
 * snapshot does not change whenever a Rust source file does.
 */
export function maskedTemplate(template: Template): unknown {
  const text = JSON.stringify(template.toJSON(), undefined, 1);
  return JSON.parse(text.replace(/[0-9a-f]{64}/g, '[ASSET-HASH]'));
}
