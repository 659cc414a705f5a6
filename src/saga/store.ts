/**
 * Redis access for saga instances: key layout, one script call per operation, replies decoded
 * into plain data. No decisions here (see state.ts and coordinator.ts).
 *
 * Internal module.
 * @packageDocumentation
 */
import { runScript, type LuaScript, type ScriptClient } from '../core/index.js';
import { SagaStoreError } from './errors.js';
import { CANCEL, CLAIM, LIST, READ, START, TRANSITION } from './scripts.js';
import { decodeRow, shardOf, type Row, type SagaStatus } from './state.js';

/** The store's settings (resolved coordinator options). @internal */
export interface StoreConfig {
  readonly client: ScriptClient;
  readonly prefix: string;
  readonly shards: number;
  readonly leaseMs: number;
  readonly historyLimit: number;
  readonly finishedHistory: number;
  readonly retentionMs: number;
}

/** The keys of one instance and of its shard. @internal */
export interface InstanceKeys {
  /** hash, history, live, fin:completed, fin:compensated, fin:needs-attention */
  readonly all: readonly string[];
  readonly base: string;
}

/** A transition's operation. @internal */
export type TransitionOp = 'begin' | 'done' | 'fail' | 'cbegin' | 'cdone' | 'park' | 'renew';

/** The reply to a transition. @internal */
export type TransitionReply =
  | {
      readonly ok: true;
      readonly version: number;
      readonly now: number;
      readonly lease: number;
      readonly status: SagaStatus;
      readonly cj: number;
      /** The instance's reason (why it compensates, or was parked), if any. */
      readonly why: string | undefined;
    }
  | {
      readonly ok: false;
      readonly why: 'missing' | 'fenced' | 'version' | 'state';
      readonly fence: number;
      readonly version: number;
      readonly status: string;
    };

/** Saga instance storage on Redis. @internal */
export class SagaStore {
  readonly config: StoreConfig;

  constructor(config: StoreConfig) {
    this.config = config;
  }

  /** `<prefix>{<saga>:<shard>}:` — every key of the shard starts with it. */
  base(saga: string, shard: number): string {
    return `${this.config.prefix}{${saga}:${shard}}:`;
  }

  keys(saga: string, id: string): InstanceKeys {
    const base = this.base(saga, shardOf(id, this.config.shards));
    return { base, all: shardKeys(base, id) };
  }

  async #run(
    operation: string,
    script: LuaScript,
    keys: readonly string[],
    args: readonly (string | number)[],
  ): Promise<unknown> {
    try {
      return await runScript(this.config.client, script, keys, args);
    } catch (error) {
      throw new SagaStoreError(operation, { cause: error });
    }
  }

  async start(
    saga: string,
    id: string,
    owner: string,
    input: string,
    timeoutMs: number,
    steps: number,
  ): Promise<{
    kind: 'created' | 'claimed' | 'exists' | 'conflict';
    now: number;
    row: Row | undefined;
  }> {
    const c = this.config;
    const reply = (await this.#run(
      `start ${saga}/${id}`,
      START,
      this.keys(saga, id).all.slice(0, 3),
      [id, owner, saga, input, c.leaseMs, c.historyLimit, timeoutMs, steps],
    )) as unknown[];
    if (Number(reply[0]) === 0) return { kind: 'conflict', now: 0, row: undefined };
    return {
      kind: String(reply[1]) as 'created' | 'claimed' | 'exists',
      now: Number(reply[2]),
      row: decodeRow(reply[3] as unknown[]),
    };
  }

  /**
   * One transition script call. `keys` are the instance's keys ({@link SagaStore.keys}), which a
   * caller driving one instance computes once rather than per transition.
   */
  async transition(
    saga: string,
    id: string,
    row: Pick<Row, 'owner' | 'fence' | 'version'>,
    op: TransitionOp,
    step: number,
    detail: string,
    argument: string,
    keys: readonly string[] = this.keys(saga, id).all,
  ): Promise<TransitionReply> {
    const c = this.config;
    const reply = (await this.#run(`${op} step ${step} of ${saga}/${id}`, TRANSITION, keys, [
      id,
      row.owner,
      row.fence,
      row.version,
      c.leaseMs,
      c.historyLimit,
      c.retentionMs,
      c.finishedHistory,
      op,
      step,
      detail,
      argument,
    ])) as unknown[];
    if (Number(reply[0]) === 1) {
      return {
        ok: true,
        version: Number(reply[1]),
        now: Number(reply[2]),
        lease: Number(reply[3]),
        status: String(reply[4]) as SagaStatus,
        cj: Number(reply[5]),
        why: typeof reply[6] === 'string' ? reply[6] : undefined,
      };
    }
    return {
      ok: false,
      why: String(reply[1]) as 'missing',
      fence: Number(reply[2]),
      version: Number(reply[3]),
      status: String(reply[4]),
    };
  }

  /** Claims the expired instances of one shard. */
  async claim(
    saga: string,
    shard: number,
    owner: string,
    limit: number,
  ): Promise<{ now: number; rows: [string, Row][] }> {
    const c = this.config;
    const base = this.base(saga, shard);
    const reply = (await this.#run(
      `claim ${saga} shard ${shard}`,
      CLAIM,
      [`${base}live`],
      [owner, c.leaseMs, c.historyLimit, limit, base],
    )) as unknown[];
    const flat = (reply[1] ?? []) as unknown[];
    const rows: [string, Row][] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const row = decodeRow(flat[i + 1] as unknown[]);
      if (row !== undefined) rows.push([String(flat[i]), row]);
    }
    return { now: Number(reply[0]), rows };
  }

  async read(saga: string, id: string): Promise<{ row: Row; history: string[] } | undefined> {
    const keys = this.keys(saga, id).all;
    const reply = (await this.#run(`read ${saga}/${id}`, READ, keys.slice(0, 2), [])) as unknown[];
    const row = decodeRow((reply[0] ?? []) as unknown[]);
    if (row === undefined) return undefined;
    return { row, history: ((reply[1] ?? []) as unknown[]).map(String) };
  }

  async cancel(saga: string, id: string): Promise<boolean> {
    const reply = await this.#run(
      `cancel ${saga}/${id}`,
      CANCEL,
      this.keys(saga, id).all.slice(0, 1),
      [],
    );
    return Number(reply) === 1;
  }

  async list(
    saga: string,
    status: SagaStatus | '',
    limit: number,
  ): Promise<{ id: string; status: SagaStatus }[]> {
    const out: { id: string; status: SagaStatus }[] = [];
    for (let shard = 0; shard < this.config.shards && out.length < limit; shard++) {
      const base = this.base(saga, shard);
      const keys = shardKeys(base, '').slice(2);
      const flat = (await this.#run(`list ${saga} shard ${shard}`, LIST, keys, [
        status,
        limit - out.length,
        base,
      ])) as unknown[];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        out.push({ id: String(flat[i]), status: String(flat[i + 1]) as SagaStatus });
      }
    }
    return out;
  }
}

function shardKeys(base: string, id: string): string[] {
  return [
    `${base}s:${id}`,
    `${base}h:${id}`,
    `${base}live`,
    `${base}fin:completed`,
    `${base}fin:compensated`,
    `${base}fin:needs-attention`,
  ];
}
