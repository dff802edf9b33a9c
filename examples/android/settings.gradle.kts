pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}
dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()        // com.google.ai.edge.litert:litert (the LiteRT runtime)
        mavenCentral()
    }
}
rootProject.name = "KerasL0Keyboard"
include(":app")
