// The article list. Static, cached until a push revalidates the `article` tag (the type is one of every push's
// tags): the list reads the store through a cache entry tagged `article`.
import {unstable_cache} from 'next/cache'
import {articles} from '../lib/content.js'

const listArticles = unstable_cache(async () => articles().map(({_id, _rev, title, slug}) => ({_id, _rev, title, slug})), ['articles'], {tags: ['article']})

export default async function Home() {
  const list = await listArticles()
  return (
    <main>
      <h1>Articles</h1>
      <ul data-count={list.length}>
        {list.map((a) => (
          <li key={a._id} data-id={a._id} data-rev={a._rev}>
            <a href={`/blog/${a.slug}`}>{a.title}</a>
          </li>
        ))}
      </ul>
    </main>
  )
}
