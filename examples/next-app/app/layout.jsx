export const metadata = {title: 'sanity-fly-sync on Next.js'}

export default function RootLayout({children}) {
  return (
    <html lang="en">
      <body>
        {children}
        <footer>
          rendered by Machine <span data-machine={process.env.FLY_MACHINE_ID ?? 'build'}>{process.env.FLY_MACHINE_ID ?? 'build'}</span>
        </footer>
      </body>
    </html>
  )
}
