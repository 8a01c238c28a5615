// One Function run in a worker thread, so the simulation can kill it the way Sanity kills a run at its timeout:
// `worker.terminate()` stops it wherever it is, its requests in flight already sent. Posts the report (or the
// error) back; a `context.invoke` it makes is posted too, for the simulation to run (the continuation).
import {parentPort, workerData} from 'node:worker_threads'
import {handler} from '../function.ts'

const invoke = async (name, data) => parentPort.postMessage({type: 'invoke', name, data})
try {
  const report = await handler({context: {local: true, clientOptions: workerData.clientOptions, invoke}, event: {data: workerData.data}})
  parentPort.postMessage({type: 'done', report})
} catch (error) {
  parentPort.postMessage({type: 'done', error: error instanceof Error ? error.message : String(error), report: error?.report ?? null})
}
