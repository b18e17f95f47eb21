import * as fs from 'node:fs';
import * as path from 'node:path';
import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { STAGE_NAMES } from '../lib/settings';
import { buildTestApp, maskedTemplate, removeTestOutput } from './helpers';

afterAll(removeTestOutput);

describe('cdk-nag (AwsSolutions)', () => {
  const { app } = buildTestApp();

  test('every stage synthesizes with no unacknowledged finding', () => {
    // The nag pack is a validation plugin: a finding makes synth throw with the report.
    const assembly = app.synth();
    const report = JSON.parse(fs.readFileSync(path.join(assembly.directory, 'validation-report.json'), 'utf8'));
    for (const pluginReport of report.pluginReports) {
      expect({ plugin: pluginReport.pluginName, violations: pluginReport.violations }).toEqual({
        plugin: pluginReport.pluginName,
        violations: [],
      });
    }
    expect(assembly.stacks.map((stack) => stack.stackName).sort()).toEqual(
      STAGE_NAMES.flatMap((stage) => [`GlassBox-${stage}-Data`, `GlassBox-${stage}-Service`]).sort(),
    );
  });

  test('every acknowledgement states a reason', () => {
    const acknowledgements = app.node
      .findAll()
      .flatMap((construct) =>
        construct.node.metadata.filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY),
      )
      // Each entry maps rule ids to their reasons.
      .flatMap((entry) => Object.entries(entry.data as Record<string, unknown>));
    expect(acknowledgements.some(([ruleId]) => ruleId.includes('AwsSolutions-'))).toBe(true);
    for (const [ruleId, reason] of acknowledgements) {
      expect({ ruleId, reasonIsSentence: typeof reason === 'string' && reason.length >= 30 }).toEqual({
        ruleId,
        reasonIsSentence: true,
      });
    }
  });
});

describe('snapshots (asset hashes masked)', () => {
  const { stages } = buildTestApp();

  test.each(['dev', 'prod'] as const)('%s templates', (stage) => {
    expect(maskedTemplate(Template.fromStack(stages[stage].data))).toMatchSnapshot('data');
    expect(maskedTemplate(Template.fromStack(stages[stage].service))).toMatchSnapshot('service');
  });
});
