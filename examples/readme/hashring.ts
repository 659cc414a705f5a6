import { HashRing } from 'keel/hashring';

const ring = new HashRing({
  nodes: [
    { id: 'orders-a', zone: 'eu-1a', data: { url: 'http://10.0.0.1:8080' } },
    { id: 'orders-b', zone: 'eu-1b', data: { url: 'http://10.0.0.2:8080' } },
    { id: 'orders-c', zone: 'eu-1c', data: { url: 'http://10.0.0.3:8080' }, weight: 2 },
  ],
});

const owner = ring.get('order:1234'); // same answer in every process; undefined if empty
const replicas = ring.getN('order:1234', 2, { distinctZones: true }); // owner first
const before = ring.toJSON();
ring.add({ id: 'orders-d', data: { url: 'http://10.0.0.4:8080' } }); // keys move only to orders-d
const { movedFraction } = HashRing.diff(HashRing.fromJSON(before), ring); // what to migrate
console.log(owner?.data?.url, replicas.length, movedFraction, ring.fingerprint);
