// Events as Sanity makes them: a changed document is matched against the repo's own sanity.blueprint.ts — its
// `event.on`, its filter and its projection, evaluated with groq-js in delta mode with the before and after
// documents, as Sanity's runtime (and its local CLI) does — and the result is the Function's `event.data`.
// A wrong filter or projection in the blueprint therefore changes what the simulation and the tests see.
import {parse, evaluate} from 'groq-js'
import blueprintModule from '../sanity.blueprint.ts'

const blueprint = blueprintModule()
export const documentFunctions = blueprint.resources.filter((r) => r.type === 'sanity.function.document')

function isDraft(id) {
  return id.startsWith('drafts.')
}
function isVersion(id) {
  return id.startsWith('versions.')
}

/**
 * The `event.data` each document Function of the blueprint receives for one document change, or nothing.
 * `before`/`after`: the document before and after the transaction (null when it did not / no longer exists).
 * @returns {Promise<Array<{name: string, data: object}>>}
 */
export async function eventsFor({before, after, projectId = 'local', dataset = 'production'}) {
  const operation = before && after ? 'update' : after ? 'create' : before ? 'delete' : null
  if (!operation) return []
  // The document the filter and projection run on: the new one, or for a delete the one that was.
  const doc = after ?? before
  const out = []
  for (const fn of documentFunctions) {
    const event = fn.event ?? {on: ['publish']}
    const on = event.on ?? ['publish']
    const wanted = on.includes(operation) || (on.includes('publish') && operation !== 'delete')
    if (!wanted) continue
    if (isDraft(doc._id) && !event.includeDrafts) continue
    if (isVersion(doc._id) && !event.includeAllVersions) continue
    const query = `*[${event.filter ?? ''}]${event.projection ?? ''}`
    const tree = parse(query, {mode: 'delta'})
    const result = await evaluate(tree, {dataset: [doc], before, after, sanity: {projectId, dataset}})
    const [data] = await result.get()
    if (data !== undefined) out.push({name: fn.name, data})
  }
  return out
}
