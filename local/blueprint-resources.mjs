// The repository blueprint's resources as a Function's context offers them (`context.resources`, Sanity's
// ResourcesApi: a lookup by name). @sanity/functions' `invoke` reads it to tell that a Function it is asked to run
// is a pubsub Function; local runs of the handler pass it, as Sanity's CLI does.
import blueprint from '../sanity.blueprint.ts'

export function blueprintResources() {
  const all = blueprint().resources.map((r) => ({id: r.name, name: r.name, type: r.type}))
  const byName = (name) => all.find((r) => r.name === name)
  const ofType = (prefix) => (name) => (byName(name)?.type.startsWith(prefix) ? byName(name) : undefined)
  return Object.assign(byName, {
    all: () => [...all],
    [Symbol.iterator]: () => all[Symbol.iterator](),
    function: ofType('sanity.function.'),
    cors: ofType('sanity.project.cors'),
    dataset: ofType('sanity.project.dataset'),
    project: ofType('sanity.project'),
    role: ofType('sanity.access.role'),
    webhook: ofType('sanity.project.webhook'),
  })
}
