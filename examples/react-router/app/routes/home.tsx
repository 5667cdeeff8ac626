import { useLoaderData } from "react-router";

export function meta() {
  return [{ title: "New React Router App" }];
}

export function loader() {
  return { message: "Hello from React Router's loader" };
}

export default function Home() {
  const { message } = useLoaderData<typeof loader>();
  return (
    <main>
      <h1>{message}</h1>
    </main>
  );
}
