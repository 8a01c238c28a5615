// One article, rendered on its first request and cached (incremental static regeneration) until a push
// revalidates its route: `/blog/{slug}`, the route template the Function is given for articles. A rename
// revalidates the old route too, a delete every old one.
import {notFound} from 'next/navigation'
import {articleBySlug} from '../../../lib/content.js'

export const dynamicParams = true
export const revalidate = false

export function generateStaticParams() {
  return []
}

export default async function Article({params}) {
  const {slug} = await params
  const article = articleBySlug(slug)
  if (!article) notFound()
  return (
    <article data-id={article._id} data-rev={article._rev}>
      <h1>{article.title}</h1>
    </article>
  )
}
